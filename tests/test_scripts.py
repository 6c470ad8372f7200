"""scripts/gpu_quality.sh, the stages of the GPU sweeps (issue 20), driven on CPU with a tiny budget: each
(width, learning rate) is one `train` command (one record file: a device call brings back 8 files), the commands run
one after another, and LIMIT_S refuses to start a command that cannot finish. scripts/gpu_paper.sh (issue 19) on a
small corpus: a paper cell stopped in one call, carried as pieces and finished in the next; `next`, which runs what
the records lack and the memory probes; `collect`, which keeps what a call brought back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "--steps 2 --batch 4 --eval-every 1 --task-opt train_examples=64,test_examples=16"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def stage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    python = Path(sys.executable).parent  # the `python` the script calls is this interpreter
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_quality.sh"), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PATH": f"{python}:{os.environ['PATH']}", "DEVICE": "cpu",
                                            "EXTRA": TINY, "RESULTS": str(tmp_path / "r"),
                                            "CKPT": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path), **env})


def records(folder: Path) -> dict[str, list[dict]]:
    return {f.name: [json.loads(line) for line in f.read_text().splitlines()] for f in sorted(folder.glob("*.jsonl"))}


def test_lrs_runs_one_command_per_width_and_rate_each_with_every_attention(tmp_path):
    r = stage(tmp_path, "lrs", "32,48", "sha,mqa", "1", LRS="1e-3 3e-4")
    assert r.returncode == 0, r.stderr
    files = records(tmp_path / "r")
    assert len(files) == 4
    points = sorted((rec["config"]["preset_fields"]["d_model"], rec["config"]["preset_fields"]["lr"])
                    for recs in files.values() for rec in recs[:1])
    assert points == [(32, 3e-4), (32, 1e-3), (48, 3e-4), (48, 1e-3)]
    for recs in files.values():
        assert sorted(rec["attn"] for rec in recs) == ["mqa", "sha"]
        assert all(rec["status"] == "ok" and rec["config"]["preset_fields"]["task"] == "mqar" for rec in recs)


def test_a_stage_without_time_left_starts_nothing_and_says_so(tmp_path):
    r = stage(tmp_path, "width", "32", "1", "sha", LIMIT_S="10")
    assert r.returncode != 0
    assert "not started (LIMIT_S" in r.stderr
    assert not list((tmp_path / "r").glob("*.jsonl"))


def test_an_unknown_stage_is_one_line_and_exit_2(tmp_path):
    r = stage(tmp_path, "sweep")
    assert r.returncode == 2 and r.stderr.strip().startswith("unknown stage sweep")


def small_lm(tmp_path: Path) -> str:
    """EXTRA for the default-preset stages: a small model on a small corpus, scored at 32 and 64 tokens."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"to be or not to be, line {i}; that is the question.\n" for i in range(300)))
    return f"--steps 2 --batch 4 --eval-every 1 --layers 1 --d-model 32 --heads 2 --ctx 32 --eval-ctx 32,64 " \
           f"--data {corpus}"


def test_extrapolate_scores_each_length_with_seeds_one_by_one(tmp_path):
    """The extrapolation stage on a small corpus and model: one command, every attention given, seeds trained one by
    one (--ensemble off: stacking does not pay under the default preset), each record scored at every length; past
    the learned position table mha says n/a, rmha has a figure."""
    r = stage(tmp_path, "extrapolate", "mha,rmha", "2", EXTRA=small_lm(tmp_path))
    assert r.returncode == 0, r.stderr
    (recs,) = records(tmp_path / "r").values()
    assert sorted((rec["attn"], rec["config"]["seed"], rec["config"]["ensemble"]) for rec in recs) == \
        [("mha", 0, 1), ("mha", 1, 1), ("rmha", 0, 1), ("rmha", 1, 1)]
    assert all("--ensemble off" in rec["command"] for rec in recs)
    at = {(rec["attn"], e["ctx"]): e for rec in recs for e in rec["metrics"]["eval_ctx"]}
    assert at[("mha", 64)]["status"] == "n/a" and at[("rmha", 64)]["acc"] > 0 and at[("mha", 32)]["acc"] > 0


def test_resume_last_finishes_a_stopped_stage_in_a_new_results_folder(tmp_path):
    """A stage stopped by its time budget (the next device call), resumed with `resume last` into an empty results
    folder, as on a lent machine whose $OUT starts empty: the finished run is copied, not run again; the stopped one
    finishes."""
    r = stage(tmp_path, "extrapolate", "mha", "2", EXTRA=small_lm(tmp_path) + " --stop-after 0.001 --eval-every 2")
    assert r.returncode == 75, r.stderr  # seed 0 trains its one stretch; seed 1 stops at step 0
    first, stopped = [rec for recs in records(tmp_path / "r").values() for rec in recs]
    assert (first["config"]["seed"], first["status"], stopped["status"]) == (0, "ok", "interrupted")
    shutil.rmtree(tmp_path / "r")
    r = stage(tmp_path, "resume", "last", EXTRA="")
    assert r.returncode == 0, r.stderr
    (recs,) = records(tmp_path / "r").values()
    assert [(rec["config"]["seed"], rec["status"], rec["metrics"]["steps"]) for rec in recs] == \
        [(0, "ok", 2), (1, "ok", 2)]
    assert recs[0] == first  # copied from the run folder as measured, not run again
    assert stage(tmp_path, "resume", str(tmp_path / "nowhere"), EXTRA="").returncode == 2


# ------------------------------------------------------------------------------ scripts/gpu_paper.sh (issue 19)
def paper_stage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """gpu_paper.sh on CPU with a 3,000-character corpus: the paper schedule's 10 epochs are 42 steps each."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"to be or not to be, line {i}; that is the question.\n" for i in range(60)))
    python = Path(sys.executable).parent
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_paper.sh"), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT,
                          env={**os.environ, "PATH": f"{python}:{os.environ['PATH']}", "DEVICE": "cpu",
                               "DATA": str(corpus), "RESULTS": str(tmp_path / "r"), "XDG_CACHE_HOME": str(tmp_path),
                               **env})


def test_paper_run_stops_at_an_epoch_travels_in_pieces_and_finishes_in_the_next_call(tmp_path):
    """The device-call cycle of a paper cell: the first call stops at an epoch boundary (`--stop-after`, exit 75)
    and writes the run's folder as pieces to COPY_TO; the next call, on a fresh machine (another checkpoints folder,
    an empty results folder), unpacks the carried pieces and finishes the run from there."""
    first = paper_stage(tmp_path, "run", "mha", "1", LIMIT_S="31", CKPT=str(tmp_path / "c1"),
                        COPY_TO=str(tmp_path / "out"))  # --stop-after 1: the first epoch runs, then it stops
    assert first.returncode == 75, first.stderr
    pieces = sorted((tmp_path / "out").glob("ck-mha-1-relu.tar.*"))
    assert pieces and "in 1 pieces" in first.stdout
    (stopped,) = [rec for recs in records(tmp_path / "r").values() for rec in recs]
    assert stopped["status"] == "interrupted" and stopped["metrics"]["steps"] == 42
    carried = tmp_path / "carried"
    carried.mkdir()
    for p in pieces:
        shutil.copy(p, carried)
    shutil.rmtree(tmp_path / "r")
    second = paper_stage(tmp_path, "run", "mha", "1", LIMIT_S="300", CKPT=str(tmp_path / "c2"),
                         CARRIED=str(carried))
    assert second.returncode == 0, second.stderr
    (done,) = [rec for recs in records(tmp_path / "r").values() for rec in recs]
    assert (done["status"], done["metrics"]["steps"], done["config"]["preset_fields"]["act"]) == ("ok", 420, "relu")
    assert done["metrics"]["paper_acc"] > 0 and done["config"]["resumed_from_step"] == 42
    assert [("--resume" in c) for c in done["config"]["sessions"]] == [False, True]  # the plan's two commands
    assert not (tmp_path / "c2" / "run-mha-1-relu").exists()  # finished: nothing marked to resume


def test_paper_next_runs_what_the_records_lack_then_the_probes_then_nothing(tmp_path):
    """`next`, the command every device call of the sweep repeats: a cell the committed records (DONE) already hold
    is skipped, the missing one is trained in full, then each cell's memory probe alone; run again over what came
    back, it has nothing left to do (exit 0). Without time for a cell it starts nothing and says so (exit 75)."""
    from attnbench.results import append, environment, make_record

    done = tmp_path / "done"
    done.mkdir()
    fields = {"act": "relu", "epochs": 10, "seed": 0}
    append(done / "train-done.jsonl", make_record(
        "train", "mha", "attnbench train --preset paper", {"preset": "paper", "preset_fields": fields, "seed": 0,
                                                          "attn": "mha", "ensemble": 1},
        {"paper_acc": 0.4, "steps": 420}, environment("cpu")))
    cells = {"CELLS": "mha:relu mha:relu2", "SEEDS": "1", "DONE": str(done), "STEPS": "3", "CKPT": str(tmp_path / "c")}
    r = paper_stage(tmp_path, "next", **cells)
    assert r.returncode == 0, r.stderr
    assert "next: mha:relu2" in r.stdout and "next: mha:relu," not in r.stdout
    got = sorted((rec["config"]["preset_fields"]["act"], rec["metrics"]["steps"], rec["config"]["ensemble"],
                  rec["status"]) for recs in records(tmp_path / "r").values() for rec in recs)
    assert got == [("relu", 3, 1, "ok"), ("relu2", 3, 1, "ok"), ("relu2", 420, 1, "ok")]  # two probes (alone), a run
    again = paper_stage(tmp_path, "next", **cells)
    assert again.returncode == 0 and "every cell and probe is done" in again.stdout
    assert len(records(tmp_path / "r")) == 3  # nothing trained again
    late = paper_stage(tmp_path, "next", **{**cells, "CELLS": "rmha:relu", "MIN_S": "1000", "PROBE_S": "1000"})
    assert late.returncode == 75 and "rmha:relu not started" in late.stdout
    assert len(records(tmp_path / "r")) == 3
    assert paper_stage(tmp_path, "sweep").returncode == 2


def test_paper_collect_keeps_finished_records_and_the_pieces_of_the_cell_in_flight(tmp_path):
    """Between two calls, `collect FROM` copies the record files whose every run finished into DONE, never the partial
    one of the cell in flight, and replaces the carried pieces with the new ones; a call whose cell finished empties
    ckpt-in; a record already in DONE is kept, and one of that name with other contents is not replaced (exit 1)."""
    def rec_file(path: Path, *status: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"kind": "train", "status": s, "metrics": {}}) + "\n" for s in status))

    got, done, carried = tmp_path / "got", tmp_path / "done", tmp_path / "ckpt-in"
    rec_file(got / "paper" / "train-a.jsonl", "ok", "ok")
    rec_file(got / "paper" / "train-b.jsonl", "interrupted", "interrupted")  # the cell in flight
    rec_file(got / "paper" / "train-c.jsonl", "ok", "error")  # a failed seed
    for piece in ("aa", "ab"):
        (got / f"ck-rmha-5-relu2.tar.{piece}").write_bytes(piece.encode())
    carried.mkdir()
    (carried / "ck-mha-5-relu.tar.aa").write_bytes(b"last call's")
    env = {"DONE": str(done), "CARRIED": str(carried)}
    r = paper_stage(tmp_path, "collect", str(got), **env)
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in done.iterdir()) == ["train-a.jsonl"]
    assert sorted(f.name for f in carried.iterdir()) == ["ck-rmha-5-relu2.tar.aa", "ck-rmha-5-relu2.tar.ab"]
    assert "left train-b.jsonl (interrupted" in r.stdout and "left train-c.jsonl (error, ok" in r.stdout
    shutil.rmtree(got)
    rec_file(got / "paper" / "train-a.jsonl", "ok", "ok")  # the same record again
    rec_file(got / "paper" / "train-d.jsonl", "ok")  # the cell finished in this call: no pieces came back
    r = paper_stage(tmp_path, "collect", str(got), **env)
    assert r.returncode == 0 and "train-a.jsonl is already in" in r.stdout, r.stdout + r.stderr
    assert sorted(f.name for f in done.iterdir()) == ["train-a.jsonl", "train-d.jsonl"] and not list(carried.iterdir())
    rec_file(got / "paper" / "train-a.jsonl", "ok", "ok", "ok")  # a name clash: the committed file stays
    r = paper_stage(tmp_path, "collect", str(got), **env)
    assert r.returncode == 1 and "with other contents: not replaced" in r.stdout
    assert len((done / "train-a.jsonl").read_text().splitlines()) == 2
