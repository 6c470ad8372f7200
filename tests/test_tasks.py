"""Synthetic tasks: deterministic, splits disjoint by construction, scored positions exactly the answers, and the
generators' statistics those of their construction (Zoology's MQAR, S4/Mamba's selective copying)."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.errors import AttnbenchError
from attnbench.tasks import (BLOCK, IGNORE, SPLITS, TASKS, MQAROptions, SelectiveCopyingOptions, distinct, make_task,
                             parse_options, power_law_gaps, split_of)

SMALL = {"mqar": dict(vocab_size=64, seq_len=32, num_kv_pairs=4, train_examples=0, test_examples=40),
         "selective-copying": dict(vocab_size=8, seq_len=40, num_tokens=4, test_examples=40)}
SYNTHETIC = list(SMALL)


def rows(t):
    return {tuple(r) for r in t.tolist()}


# ------------------------------------------------------------------------------------------------- registry
def test_registry_names_and_defaults():
    assert list(TASKS) == ["shakespeare", "mqar", "selective-copying"]
    assert TASKS["shakespeare"] is None
    m = MQAROptions()
    assert (m.vocab_size, m.seq_len, m.num_kv_pairs, m.power_a, m.random_non_queries) == (8192, 64, 4, 0.01, True)
    assert (m.train_examples, m.test_examples) == (100_000, 3_000)
    s = SelectiveCopyingOptions()
    assert (s.vocab_size, s.seq_len, s.num_tokens) == (16, 4096, 16)
    t = make_task("mqar", train_examples=0)
    assert (t.vocab_size, t.seq_len) == (8192, 64)
    assert t.config() == {"task": "mqar", **{**vars(m), "train_examples": 0}}


@pytest.mark.parametrize("call,match", [
    (lambda: make_task("nope"), "unknown task 'nope'; valid: shakespeare, mqar, selective-copying"),
    (lambda: make_task("shakespeare"), "text corpus"),
    (lambda: make_task("mqar", pairs=3), "unknown mqar option"),
    (lambda: make_task("mqar", seq_len=63), "even"),
    (lambda: make_task("mqar", seq_len=64, num_kv_pairs=17), r"seq_len/4 = 16"),
    (lambda: make_task("mqar", vocab_size=8, seq_len=64, num_kv_pairs=4), "distinct keys"),
    (lambda: make_task("selective-copying", vocab_size=2), ">= 3"),
    (lambda: make_task("selective-copying", seq_len=10, num_tokens=6), "seq_len/2"),
    (lambda: parse_options("mqar", "seq_len"), "NAME=VALUE"),
    (lambda: parse_options("mqar", "seq_len=x"), "not a int"),
    (lambda: make_task("mqar", **SMALL["mqar"]).batch("dev", 0, 2), "split must be one of"),
])
def test_user_errors_are_one_clear_line(call, match):
    with pytest.raises(AttnbenchError, match=match):
        call()


def test_parse_options_types_values_by_field():
    got = parse_options("mqar", " num_kv_pairs=8, power_a=1, random_non_queries=false,seed=3 ")
    assert got == {"num_kv_pairs": 8, "power_a": 1.0, "random_non_queries": False, "seed": 3}
    assert isinstance(got["power_a"], float) and parse_options("selective-copying", "") == {}


# ------------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", SYNTHETIC)
def test_batches_are_a_pure_function_of_seed_split_index(name):
    a, b = make_task(name, **SMALL[name]), make_task(name, **SMALL[name])
    for split in SPLITS:
        for x, y in zip(a.batch(split, 3, 8), b.batch(split, 3, 8)):
            assert torch.equal(x, y)
    x_other, _, _ = make_task(name, **{**SMALL[name], "seed": 1}).batch("test", 0, 8)
    assert not torch.equal(a.batch("test", 0, 8)[0], x_other)
    assert a.batch("train", 0, 8)[0].dtype == torch.int64 and a.batch("train", 0, 8)[2].dtype == torch.bool


@pytest.mark.parametrize("name", SYNTHETIC)
def test_an_example_does_not_depend_on_the_batch_size(name):
    t = make_task(name, **SMALL[name])
    whole = t.batch("val", 0, BLOCK + 90)[0]  # crosses a block boundary
    parts = torch.cat([t.batch("val", i, 109)[0] for i in range(10)])  # examples 0 … 1089
    assert len(parts) > BLOCK and torch.equal(whole[:len(parts)], parts)
    test = torch.cat([x for x, _, _ in t.test_batches(batch_size=16)])
    assert len(test) == 40 and torch.equal(test, torch.cat([x for x, _, _ in t.test_batches(batch_size=40)]))
    assert [len(x) for x, _, _ in t.test_batches(batch_size=16)] == [16, 16, 8]


# ------------------------------------------------------------------------------------------------- disjointness
def test_splits_partition_the_identities_even_where_they_must_collide():
    """72 possible stores (3·2 key orders × 4·3 value orders): every split draws only its own, never another's."""
    t = make_task("mqar", vocab_size=8, seq_len=8, num_kv_pairs=2, train_examples=0)
    stores = {s: rows(t.batch(s, 0, 600)[0][:, :4]) for s in SPLITS}
    assert all(stores.values())
    assert not (stores["train"] & stores["val"] or stores["train"] & stores["test"] or stores["val"] & stores["test"])
    assert len(stores["train"] | stores["val"] | stores["test"]) == 72  # and together they are all of them
    for i, s in enumerate(SPLITS):
        assert split_of(torch.tensor(sorted(stores[s]))).eq(i).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_no_test_sequence_appears_in_training(name):
    t = make_task(name, **SMALL[name])
    train = rows(torch.cat([t.batch("train", i, 256)[0] for i in range(8)]))
    test = rows(torch.cat([x for x, _, _ in t.test_batches()]))
    assert len(test) == 40 and not train & test


def test_finite_training_set_is_reshuffled_every_epoch():
    t = make_task("mqar", **{**SMALL["mqar"], "train_examples": 48})
    epochs = [torch.cat([t.batch("train", e * 3 + i, 16)[0] for i in range(3)]) for e in range(3)]
    pool = rows(t.examples("train", torch.arange(48))[0])
    assert all(rows(e) == pool and len(e) == 48 for e in epochs)  # each epoch: every example once
    assert not torch.equal(epochs[0], epochs[1])
    straddle = t.batch("train", 1, 40)[0]  # examples 40..79: the end of epoch 0, the start of epoch 1
    assert torch.equal(straddle[:8], epochs[0][40:]) and torch.equal(straddle[8:], epochs[1][:32])


# ------------------------------------------------------------------------------------------------- MQAR
@pytest.mark.parametrize("fillers", [False, True])
def test_mqar_scores_exactly_the_queried_values(fillers):
    V, T, n = 64, 32, 4
    t = make_task("mqar", vocab_size=V, seq_len=T, num_kv_pairs=n, random_non_queries=fillers, train_examples=0)
    x, y, mask = t.batch("train", 0, 256)
    assert torch.equal(mask, y != IGNORE) and mask.sum(1).eq(n).all()
    for xr, yr, mr in zip(x.tolist(), y.tolist(), mask.tolist()):
        keys, values = xr[0:2 * n:2], xr[1:2 * n:2]
        assert len(set(keys)) == n and all(1 <= k < V // 2 for k in keys)
        assert len(set(values)) == n and all(V // 2 <= v < V for v in values)
        scored = [p for p in range(T) if mr[p]]
        assert all(p >= 2 * n and (p - 2 * n) % 2 == 0 for p in scored)  # queries at 2n + 2·gap
        assert sorted(xr[p] for p in scored) == sorted(keys)  # every key queried once
        pair = dict(zip(keys, values))
        assert all(yr[p] == pair[xr[p]] for p in scored)  # the answer is the value stored with the key
        others = [xr[p] for p in range(2 * n, T) if not mr[p]]
        assert fillers or set(others) <= {0}


def test_mqar_fillers_are_uniform_tokens():
    t = make_task("mqar", vocab_size=64, seq_len=64, num_kv_pairs=4, train_examples=0)
    x, _, mask = t.batch("train", 0, 512)
    fill = x[:, 8:][~mask[:, 8:]].float()
    assert abs(fill.mean().item() - 31.5) < 1.0 and fill.min() == 0 and fill.max() == 63


@pytest.mark.parametrize("a", [0.01, 1.0])
def test_mqar_first_pair_gap_follows_the_power_law(a):
    """The first pair's gap is the first draw, so P(gap = i) = p_i ∝ a·(i+1)^(a−1) exactly; the second pair's the
    second draw of a sampling without replacement (Zoology's np.random.choice(replace=False, p=p))."""
    V, T, n, m = 64, 32, 4, 4096
    t = make_task("mqar", vocab_size=V, seq_len=T, num_kv_pairs=n, power_a=a, random_non_queries=False,
                  train_examples=0)
    x, _, mask = t.batch("train", 0, m)
    where = (x[:, 2 * n:] == x[:, :1]).float().argmax(dim=1)  # position of the first key's query
    gap = where // 2
    space = (T - 2 * n) // 2
    p = torch.arange(1, space + 1, dtype=torch.float64).pow(a - 1)
    p = p / p.sum()
    for i in (0, 1, space - 1):
        got, se = (gap == i).double().mean().item(), math.sqrt(p[i] * (1 - p[i]) / m)
        assert abs(got - p[i].item()) < 5 * se, (i, got, p[i].item())
    # the second pair's gap is the second draw without replacement: P(i) = sum_{j != i} p_j p_i / (1 - p_j)
    gap2 = (x[:, 2 * n:] == x[:, 2:3]).float().argmax(dim=1) // 2
    for i in (0, 1):
        want = sum(p[j] * p[i] / (1 - p[j]) for j in range(space) if j != i).item()
        got, se = (gap2 == i).double().mean().item(), math.sqrt(want * (1 - want) / m)
        assert abs(got - want) < 5 * se, (i, got, want)


def test_power_law_gaps_are_distinct_and_in_range():
    g = torch.Generator().manual_seed(0)
    gaps = power_law_gaps(g, 500, 10, 10, 0.01)
    assert torch.equal(gaps.sort(dim=1).values, torch.arange(10).expand(500, 10))


def test_distinct_is_uniform_over_ordered_subsets():
    counts = torch.zeros(4, 4)
    d = distinct(torch.Generator().manual_seed(0), 24_000, 2, 10, 14)
    assert (d[:, 0] != d[:, 1]).all() and d.min() == 10 and d.max() == 13
    counts.index_put_((d[:, 0] - 10, d[:, 1] - 10), torch.ones(len(d)), accumulate=True)
    off = counts[~torch.eye(4, dtype=torch.bool)]
    assert (off - 2000).abs().max() < 5 * math.sqrt(2000)  # 12 ordered pairs, 2000 each


# ------------------------------------------------------------------------------------------------- selective copying
def test_selective_copying_asks_for_the_data_tokens_in_order():
    V, T, M = 8, 40, 4
    t = make_task("selective-copying", vocab_size=V, seq_len=T, num_tokens=M)
    x, y, mask = t.batch("train", 0, 256)
    assert torch.equal(mask, y != IGNORE) and mask[:, T - M:].all() and not mask[:, :T - M].any()
    assert x[:, T - M:].eq(V - 1).all()  # the markers
    body = x[:, :T - M]
    assert body.ne(0).sum(1).eq(M).all() and body.max() <= V - 2  # M data tokens in [1, V-2] amid noise 0
    for b, target in zip(body.tolist(), y[:, T - M:].tolist()):
        assert [v for v in b if v] == target
    places = body.ne(0).float().mean(0)  # data positions uniform over the first T - M
    assert (places - M / (T - M)).abs().max() < 0.06
