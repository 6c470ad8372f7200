"""The `paper` preset (issue 12): the authors' schedule, data order, model and metric, against independent rebuilds."""

from __future__ import annotations

import torch

from attnbench.paper_run import Streams, labml_schedule


def _labml_rounds(total: int, inner: int) -> list[tuple[int, int]]:
    """labml_helpers' Trainer/BatchIndex loop, simulated step by step: the batches each call of the trainer runs."""
    idx, out = 0, []
    for iteration in range(inner):
        start = idx
        while not idx >= (iteration + 1) * total // inner:  # BatchIndex.iteration_completed
            idx += 1
        out.append((start, idx))
    return out


def test_schedule_matches_labml_batch_index_and_interleaves_validation():
    n_train, n_valid, epochs = 15685, 1742, 3
    chunks = labml_schedule(n_train, n_valid, epochs)
    train = [(c.start, c.stop) for c in chunks if c.split == "train" and c.epoch == 1]
    valid = [(c.start, c.stop) for c in chunks if c.split == "valid" and c.epoch == 1]
    assert train == _labml_rounds(n_train, 25)
    assert valid == _labml_rounds(n_valid, 25)
    assert [c.split for c in chunks[:4]] == ["train", "valid", "train", "valid"]
    assert sum(c.stop - c.start for c in chunks if c.split == "train") == epochs * n_train


def test_schedule_cut_after_max_train_steps_keeps_its_round_validation():
    chunks = labml_schedule(1000, 100, 5, max_train_steps=90)
    assert [(c.split, c.start, c.stop) for c in chunks] == [("train", 0, 40), ("valid", 0, 4), ("train", 40, 80),
                                                           ("valid", 4, 8), ("train", 80, 90), ("valid", 8, 12)]


def test_streams_read_like_labml_sequential_loader():
    data = torch.arange(103)
    s = Streams(data, batch=4, ctx=3, device=torch.device("cpu"))  # per = 25: stream k holds 25k .. 25k+24
    assert len(s) == 25 // 3
    x, y = s.get(0)
    assert x.tolist() == [[0, 1, 2], [25, 26, 27], [50, 51, 52], [75, 76, 77]]
    assert torch.equal(y, x + 1)
    x, y = s.get(len(s) - 1)  # batch 7 starts at 21: min(3, 25 - 1 - 21) = 3 tokens
    assert x[0].tolist() == [21, 22, 23] and y[0].tolist() == [22, 23, 24]
    t = Streams(torch.arange(4 * 24), batch=4, ctx=2, device=torch.device("cpu"))  # per = 24: last segment short
    x, y = t.get(len(t) - 1)
    assert x.shape == (4, 1) and x[0].tolist() == [22] and y[0].tolist() == [23]
