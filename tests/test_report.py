"""report and --compare: from constructed records (exact numbers) and from real tiny CPU runs of the producers."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attnbench import report
from attnbench.cli import app
from attnbench.record_groups import _latest
from attnbench.results import append, make_record
from attnbench.config import PRESETS, AttnConfig
from attnbench.tables import cell

PNG = b"\x89PNG\r\n\x1a\n"
ATTNS = ("mha", "rmha")
SEQ = (64, 128, 256, 512)


def env(name="NVIDIA H100 80GB HBM3", device="cuda"):
    return {"device": device, "device_name": name, "driver": "550.54" if device == "cuda" else None,
            "cuda": "12.4" if device == "cuda" else None, "torch": "2.5.1", "attnbench": "0.1.0",
            "git_commit": "abc", "threads": 8}


def speed_rec(attn, t, median, iqr=0.1, e=None, status="ok", mode="fwd+bwd"):
    cfg = {"name": attn, "impl": "fast", "seq_len": t, "batch": 2, "heads": 4, "d_model": 64, "kv_heads": None,
           "dtype": "bfloat16", "device": "cuda", "mode": mode, "compile": False, "flush_l2": False, "causal": True}
    if status == "ok":
        cfg["attn_config"] = {"d_model": 64, "n_heads": 4}
    m = {} if status != "ok" else {"median_ms": median, "p25_ms": median - iqr / 2, "p75_ms": median + iqr / 2,
                                   "min_ms": median - iqr, "mean_ms": median, "tokens_per_s": 2 * t / median * 1e3}
    return make_record("speed", attn, "attnbench speed", cfg, m, e or env(), status=status,
                       reason=None if status == "ok" else "out of memory")


def memory_rec(attn, t, mib, e=None, status="ok"):
    cfg = {"name": attn, "impl": "fast", "seq_len": t, "batch": 2, "heads": 4, "d_model": 64, "kv_heads": None,
           "dtype": "bfloat16", "device": "cuda", "mode": "fwd+bwd", "compile": False, "flush_l2": False}
    m = {"peak_alloc_mib": mib, "reserved_mib": mib * 1.5} if status == "ok" else {}
    return make_record("memory", attn, "attnbench memory", cfg, m, e or env(), status=status)


def train_rec(attn, seed, acc, preset="tiny", e=None, **override):
    curves = [{"step": s, "seconds": s * 0.5 + seed * 0.01, "train_loss": 4.0 - 0.05 * s,
               "val_loss": 4.1 - 0.05 * s - 0.01 * seed, "val_acc": 0.1 + 0.01 * s + 0.001 * seed} for s in (10, 20, 30)]
    fields = {**asdict(PRESETS[preset].resolved()), "seed": seed, "device": "cuda", **override}
    acfg = asdict(AttnConfig(d_model=fields["d_model"], n_heads=fields["n_heads"], kv_heads=fields["kv_heads"]))
    return make_record("train", attn, "attnbench train", {"preset_fields": fields, "attn": attn, "seed": seed,
                                                          "device": "cuda", "resumed_from_step": None,
                                                          "attn_config": acfg},
                       {"test_acc": acc, "test_loss": 1.5, "params": 12345, "wall_s": 15.0}, e or env(),
                       curves=curves)


def write(path: Path, recs) -> Path:
    for r in recs:
        append(path, r)
    return path


@pytest.fixture()
def run_a(tmp_path):
    recs = [speed_rec(a, t, (1.0 if a == "mha" else 3.0) * t / 64) for a in ATTNS for t in SEQ]
    recs += [memory_rec("mha", t, 0.01 * t) for t in SEQ] + [memory_rec("rmha", t, 1e-4 * t * t) for t in SEQ]
    recs += [memory_rec("rmha", 1024, None, status="oom")]
    recs += [train_rec(a, s, 0.5 + 0.01 * s) for a in ATTNS for s in (0, 1, 2)]
    return write(tmp_path / "a.jsonl", recs)


def md_rows(md: str, first: str) -> list[dict[str, str]]:
    """Every Markdown table row whose first cell is `first`, as {column: cell}."""
    lines, out, header = md.splitlines(), [], None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = cells
        elif line.startswith("|") and not line.startswith("|--") and header and cells[0] == first:
            out.append(dict(zip(header, cells)))
    return out


def md_table_rows(md: str) -> list[dict[str, str]]:
    """Every Markdown table row, as {column: cell}."""
    lines, out, header = md.splitlines(), [], None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = cells
        elif line.startswith("|") and not line.startswith("|--") and header:
            out.append(dict(zip(header, cells)))
    return out


def is_png(p: Path) -> bool:
    data = p.read_bytes()
    return data[:8] == PNG and len(data) > 5000  # a drawn plot, not an empty canvas


def test_report_tables_plots_and_numbers(run_a, tmp_path):
    res = report.build_report([run_a], tmp_path / "out")
    md = res.markdown.read_text()
    kinds = sorted(p.kind for p in res.plots)
    assert kinds == ["memory", "speed", "train"]
    for p in res.plots:
        assert p.path.parent == tmp_path / "out" and is_png(p.path)
        assert f"]({p.path.name})" in md  # linked from the Markdown, relative to it
    # the recorded numbers are in the tables: rmha at T=512 is 3 * 512/64 = 24 ms, 3x MHA
    row = next(r for r in md_rows(md, "rmha") if r.get("T") == "512" and "median_ms" in r)
    assert (row["status"], row["median_ms"], row["p25_ms"], row["p75_ms"], row["x MHA"]) == (
        "ok", "24", "23.95", "24.05", "3")
    # memory: the fitted exponents are 1 (mha, linear) and 2 (rmha, quadratic); the OOM point is kept
    assert re.search(r"\|\s*mha\s*\|\s*1\s*\|", md) and re.search(r"\|\s*rmha\s*\|\s*2\s*\|", md)
    assert re.search(r"\|\s*rmha\s*\|\s*1,024\s*\|\s*oom", md) and "oom at T=1024" in md
    # training: mean and std over 3 seeds (0.50, 0.51, 0.52 -> 0.51 +- 0.01); the preset is not the paper's
    row = next(r for r in md_rows(md, "rmha") if "test_acc" in r)
    assert (row["seeds"], row["failed"], row["test_acc"], row["params"]) == ("3", "0", "0.51 ± 0.01", "12,345")
    assert "paper: accuracy" not in md
    assert "NVIDIA H100 80GB HBM3 (cuda) · driver 550.54 · CUDA 12.4 · torch 2.5.1" in md


def test_a_seed_stopped_then_finished_by_resume_is_not_a_failed_run(tmp_path):
    """Seed 1 stopped by --stop-after in one device call and finished by --resume in the next has a partial record
    and a finished one: it counts once among the seeds, never as failed; seed 2, stopped and never resumed, fails."""
    stopped = dict(status="interrupted", reason="stopped by --stop-after", partial=True)
    recs = [train_rec("mha", s, 0.5 + 0.01 * s) for s in (0, 1)]
    recs += [{**train_rec("mha", s, None), **stopped} for s in (1, 2)]
    md = report.build_report([write(tmp_path / "a.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    row = next(r for r in md_rows(md, "mha") if "test_acc" in r)
    assert (row["seeds"], row["failed"], row["test_acc"]) == ("2", "1", "0.505 ± 0.007071")


def test_train_section_sets_no_paper_accuracy_beside_ours(tmp_path):
    """The paper's cumulative train+validation accuracy is not our held-out test accuracy: the train section no
    longer sets them side by side (report/paper.py does, with the paper's own metric beside ours)."""
    f = write(tmp_path / "t.jsonl", [train_rec(a, 0, 0.55, preset="paper") for a in ("mha", "rcmha", "sha")])
    md = report.build_report([f], tmp_path / "out", plots=False).markdown.read_text()
    assert "preset paper" in md
    assert "Against the RCMHA paper" not in md and "ours - paper" not in md and "paper: accuracy" not in md


def test_no_paper_column_when_the_run_departs_from_the_preset(tmp_path):
    f = write(tmp_path / "t.jsonl", [train_rec("rcmha", 0, 0.55, preset="paper", epochs=1)])
    md = report.build_report([f], tmp_path / "out", plots=False).markdown.read_text()
    assert "preset custom" in md and "paper: accuracy" not in md


def test_devices_never_mixed(tmp_path):
    cpu = env("x86_64", "cpu")
    recs = [speed_rec("mha", t, 1.0 * t) for t in SEQ] + [speed_rec("rmha", t, 2.0 * t, e=cpu) for t in SEQ]
    f = write(tmp_path / "two.jsonl", recs)
    res = report.build_report([f], tmp_path / "out")
    assert len(res.plots) == 2 and {p.group[0] for p in res.plots} == {"NVIDIA H100 80GB HBM3", "x86_64"}
    assert all(len(p.series) == 1 for p in res.plots)  # each device's plot holds only its own attention
    md = res.markdown.read_text()
    # no ratio across devices: rmha ran on the CPU, MHA only on the GPU, so its "x MHA" cell is empty
    rmha = [r for r in md_rows(md, "rmha") if r.get("T") == "512"]
    mha = [r for r in md_rows(md, "mha") if r.get("T") == "512"]
    assert len(rmha) == 1 and rmha[0].get("x MHA", "-") == "-" and rmha[0]["median_ms"] == "1024"
    assert len(mha) == 1 and mha[0]["x MHA"] == "1"


def test_corrupted_record_is_skipped_and_named(run_a, tmp_path):
    with open(run_a, "a") as f:
        f.write('{"schema": "attnbench.record/1", "kind": "speed", "trunc\n')
    res = CliRunner().invoke(app, ["report", str(run_a), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    n = len(run_a.read_text().splitlines())
    assert f"{run_a}:{n}" in res.output and "malformed" in res.output
    assert (tmp_path / "out" / "report.md").exists()
    assert f"{run_a}:{n}" in (tmp_path / "out" / "report.md").read_text()


def test_compare_percentages_and_flags(tmp_path):
    a = write(tmp_path / "a.jsonl", [speed_rec("mha", 64, 10.0, iqr=1.0), speed_rec("rmha", 64, 10.0, iqr=1.0),
                                     memory_rec("mha", 64, 100.0), train_rec("mha", 0, 0.5), train_rec("mha", 1, 0.6)])
    b = write(tmp_path / "b.jsonl", [speed_rec("mha", 64, 12.0, iqr=1.0), speed_rec("rmha", 64, 10.1, iqr=1.0),
                                     memory_rec("mha", 64, 101.0), train_rec("mha", 0, 0.52),
                                     train_rec("mha", 1, 0.62)])
    res = report.compare([a], [b])
    got = {(r["kind"], r["attention"], r["metric"]): r for r in res.rows}
    assert got[("speed", "mha", "median_ms")]["change_pct"] == pytest.approx(20.0)
    assert got[("speed", "mha", "median_ms")]["flag"] == "*"  # 2 ms > IQR 1 ms
    assert got[("speed", "rmha", "median_ms")]["change_pct"] == pytest.approx(1.0)
    assert got[("speed", "rmha", "median_ms")]["flag"] == ""  # 0.1 ms < IQR 1 ms
    assert got[("memory", "mha", "peak_alloc_mib")]["change_pct"] == pytest.approx(1.0)
    assert got[("memory", "mha", "peak_alloc_mib")]["flag"] == ""  # within the 2 % tolerance
    acc = got[("train", "mha", "test_acc")]  # mean over seeds 0.55 -> 0.57, std 0.0707: not flagged
    assert acc["change_pct"] == pytest.approx((0.57 - 0.55) / 0.55 * 100) and acc["flag"] == ""
    assert not any("different devices" in n for n in res.notes)


def test_compare_cli_writes_markdown_and_warns_on_devices(tmp_path):
    a = write(tmp_path / "a.jsonl", [speed_rec("mha", 64, 10.0)])
    b = write(tmp_path / "b.jsonl", [speed_rec("mha", 64, 5.0, e=env("NVIDIA A100-SXM4-80GB"))])
    res = CliRunner().invoke(app, ["report", "--compare", str(a), str(b), "--out", str(tmp_path / "o"),
                                   "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert re.search(r"\|\s*speed\s*\|\s*mha\s*\|.*\|\s*10\s*\|\s*5\s*\|\s*-50\s*\|\s*1\s*\|\s*\*\s*\|", res.output)
    assert "different devices" in res.output
    assert "-50" in (tmp_path / "o" / "compare.md").read_text()


def test_tables_only_without_matplotlib(run_a, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = report.build_report([run_a], tmp_path / "out")
    assert res.plots == [] and not list((tmp_path / "out").glob("*.png"))
    assert any("matplotlib is not installed" in n for n in res.notes)
    assert "matplotlib is not installed" in res.markdown.read_text()


def test_no_records_is_one_clear_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("not json\n")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no attnbench records" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_fit_exponent():
    assert report.fit_exponent([1, 2, 4, 8], [3 * t**1.5 for t in (1, 2, 4, 8)]) == pytest.approx(1.5)
    assert report.fit_exponent([4], [16]) is None


def test_report_json_lists_files(run_a, tmp_path):
    res = CliRunner().invoke(app, ["report", str(run_a), "--out", str(tmp_path / "o"), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows[0]["kind"] == "markdown" and all(Path(r["path"]).exists() for r in rows)


def params_rec(attn, count, e=None):
    return make_record("params", attn, "attnbench params", {"d_model": 64, "n_heads": 4, "layers": 1},
                       {"params": count}, e or env())


def test_params_table(tmp_path):
    f = write(tmp_path / "p.jsonl", [params_rec("mha", 16384), params_rec("sha", 5120)])
    md = report.build_report([f], tmp_path / "out", plots=False).markdown.read_text()
    assert md_rows(md, "mha")[0]["params"] == "16,384" and md_rows(md, "sha")[0]["params"] == "5,120"


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Records from real tiny CPU runs of the producers (speed, memory, train); ~30 s on 2 cores."""
    d = tmp_path_factory.mktemp("real")
    corpus = d / "corpus.txt"
    corpus.write_text("".join(f"to be or not to be, line {i}; that is the question.\n" for i in range(400)))
    run = CliRunner().invoke
    common = ["--batch", "1", "--heads", "2", "--d-model", "16", "--no-baseline", "--results-dir", str(d)]
    for args in (["speed", "--attn", "mha,rmha", "--max-time", "0.05", "--seq-len", "16,32", *common],
                 ["memory", "--attn", "mha", "--seq-len", "256,512", *common],  # CPU RSS growth counts pages
                 ["train", "--attn", "mha", "--preset", "tiny", "--seeds", "2", "--steps", "4", "--eval-every", "2",
                  "--ctx", "16", "--eval-stride", "16", "--batch", "4", "--eval-batch", "8", "--layers", "1", "--d-model", "16",
                  "--heads", "2", "--data", str(corpus), "--results-dir", str(d), "--checkpoints-dir", str(d / "ck"),
                  "--eval-ctx", "8,16,32"],
                 ["train", "--attn", "mha,sha", "--preset", "tiny", "--task", "mqar", "--task-opt",
                  "vocab_size=32,seq_len=16,num_kv_pairs=2,train_examples=64,test_examples=16", "--seeds", "2",
                  "--steps", "4", "--eval-every", "2", "--batch", "4", "--eval-batch", "8", "--layers", "1",
                  "--d-model", "16", "--heads", "2", "--results-dir", str(d), "--checkpoints-dir", str(d / "ck")]):
        res = run(app, args)
        assert res.exit_code == 0, (args[0], res.output)
    return d


def test_report_of_real_runs(real_runs, tmp_path):
    from attnbench.results import read

    records, problems = read([real_runs])
    assert not problems and {r["kind"] for r in records} == {"speed", "memory", "train"}
    res = CliRunner().invoke(app, ["report", str(real_runs), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name.split("-")[0] for p in pngs] == ["extrapolation", "memory", "speed", "train", "train"]
    assert all(map(is_png, pngs))
    md = (tmp_path / "out" / "report.md").read_text()
    # every recorded median and test accuracy is in the tables, as the table layer prints it
    from attnbench.tables import cell

    for r in records:
        if r["kind"] == "speed":
            row = next(x for x in md_rows(md, r["attn"]) if x.get("T") == str(r["config"]["seq_len"])
                       and "median_ms" in x)
            assert row["median_ms"] == cell(r["metrics"]["median_ms"])

    def mean_std(vals):
        mean, std = sum(vals) / len(vals), __import__("statistics").stdev(vals)
        return f"{cell(mean)} ± {cell(std)}" if std else cell(mean)

    train = [r for r in records if r["kind"] == "train"]
    by_task = {t: [r for r in train if r["config"]["task"]["task"] == t] for t in ("shakespeare", "mqar")}
    heads = {h.split(" · task ")[1]: text for h, text in sections(md).items() if " · task " in h}
    assert sorted(heads) == ["mqar (num_kv_pairs=2, seq_len=16, test_examples=16, train_examples=64, vocab_size=32)",
                             "shakespeare"]
    mqar = next(text for h, text in heads.items() if h.startswith("mqar"))
    for attn in ("mha", "sha"):
        row = next(x for x in md_rows(mqar, attn) if "seeds" in x)
        assert row["test_acc"] == mean_std([r["metrics"]["test_acc"] for r in by_task["mqar"] if r["attn"] == attn])
        assert row["test_exact"] == mean_std([r["metrics"]["test_exact"] for r in by_task["mqar"]
                                              if r["attn"] == attn])
    text = heads["shakespeare"]
    row = next(x for x in md_rows(text, "mha") if "seeds" in x)
    assert row["test_acc"] == mean_std([r["metrics"]["test_acc"] for r in by_task["shakespeare"]])
    assert row["seeds"] == "2" and "preset custom" in md  # 4 steps is not the tiny preset any more
    # length extrapolation: each evaluated length's accuracy over the two seeds, or the recorded n/a
    row = next(x for x in md_rows(text, "mha") if "acc @16" in x)
    for ctx in (8, 16, 32):
        entries = [e for r in by_task["shakespeare"] for e in r["metrics"]["eval_ctx"] if e["ctx"] == ctx]
        assert len(entries) == 2
        if "acc" in entries[0]:
            assert row[f"acc @{ctx}"] == mean_std([e["acc"] for e in entries])
        else:
            assert row[f"acc @{ctx}"].startswith(entries[0]["status"])


def test_speed_ratio_only_within_one_run(tmp_path):
    """A ratio to MHA divides medians of one run only: rmha rerun in another file gets no cross-run ratio."""
    a = write(tmp_path / "a.jsonl", [speed_rec("mha", 512, 8.0), speed_rec("rmha", 512, 16.0)])
    rerun = speed_rec("rmha", 512, 12.0)
    rerun["time_utc"] = "2999-01-01T00:00:00Z"  # the latest rmha point, from another run without MHA
    b = write(tmp_path / "b.jsonl", [rerun])
    md = report.build_report([a, b], tmp_path / "out", plots=False).markdown.read_text()
    row = next(r for r in md_rows(md, "rmha") if r.get("T") == "512" and "median_ms" in r)
    assert row["median_ms"] == "12" and row.get("x MHA", "-") == "-"  # not 12 / 8 across runs
    recorded = speed_rec("rmha", 512, 12.0)
    recorded["metrics"]["ratio_to_mha"] = 1.25  # the producer's own same-run ratio is shown as recorded
    recorded["time_utc"] = "2999-01-01T00:00:00Z"
    c = write(tmp_path / "c.jsonl", [recorded])
    md = report.build_report([a, c], tmp_path / "out2", plots=False).markdown.read_text()
    row = next(r for r in md_rows(md, "rmha") if r.get("T") == "512" and "median_ms" in r)
    assert row["x MHA"] == "1.25"


def _seeded(attn, accs, bpcs, **extra):
    """Train records of one attention, one per seed, with the given test accuracies and bpc."""
    recs = []
    for seed, (acc, bpc) in enumerate(zip(accs, bpcs)):
        r = train_rec(attn, seed, acc)
        r["metrics"].update({"test_bpc": bpc, **extra})
        recs.append(r)
    return recs


def test_seed_statistics_welch_holm_and_retention(tmp_path):
    from scipy import stats as sps

    from attnbench import stats
    from attnbench.tables import cell

    acc = {"mha": [0.560, 0.562, 0.558, 0.561, 0.559], "gqa": [0.561, 0.559, 0.560, 0.562, 0.558],
           "sha": [0.600, 0.603, 0.598, 0.601, 0.602]}
    bpc = {"mha": [2.20, 2.21, 2.19, 2.22, 2.20], "gqa": [2.21, 2.19, 2.20, 2.21, 2.20],
           "sha": [2.00, 2.01, 1.99, 2.02, 2.00]}
    recs = [r for a in acc for r in _seeded(a, acc[a], bpc[a], attn_params=1000 if a == "sha" else 3000)]
    recs += _seeded("mhe-add", [0.57], [2.1])  # one seed: summarised, never tested
    md = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    assert "#### test_acc across seeds (higher is better)" in md
    assert "#### test_bpc across seeds (lower is better)" in md

    sha = next(r for r in md_rows(md, "sha") if "x MHA" in r and "test_acc" in r)
    mean, sd = float(np.mean(acc["sha"])), float(np.std(acc["sha"], ddof=1))
    ci = sps.ttest_1samp(acc["sha"], 0.0).confidence_interval(0.95)
    assert (sha["n"], sha["test_acc"], sha["95% CI"]) == ("5", f"{cell(mean)} ± {cell(sd)}",
                                                         f"[{cell(ci.low)}, {cell(ci.high)}]")
    assert sha["x MHA"] == cell(mean / float(np.mean(acc["mha"]))) and sha["attn_params"] == "1,000"
    lo, hi = (float(v) for v in sha["x MHA CI (delta)"].strip("[]").split(","))
    assert lo < float(sha["x MHA"]) < hi and sha["x MHA CI (bootstrap)"].startswith("[")
    mha = next(r for r in md_rows(md, "mha") if "x MHA" in r and "test_acc" in r)
    assert (mha["x MHA"], mha["x MHA CI (bootstrap)"]) == ("1", "baseline")
    one = next(r for r in md_rows(md, "mhe-add") if "x MHA" in r and "test_acc" in r)
    assert (one["n"], one["95% CI"], one["x MHA CI (delta)"]) == ("1", "-", "-")

    # pairs: Welch p from scipy, Holm over the three tested pairs of this metric; mhe-add is named, not tested
    pairs = {(r["A"], r["B"]): r for a in acc for r in md_rows(md, a) if "verdict" in r and r["p (Welch)"] != "-"}
    acc_pairs = [("gqa", "mha"), ("gqa", "sha"), ("mha", "sha")]  # series in label order
    raw = [sps.ttest_ind(acc[a], acc[b], equal_var=False).pvalue for a, b in acc_pairs]
    for (a, b), p, p_holm in zip(acc_pairs, raw, stats.holm(raw)):
        row = next(r for r in md_rows(md, a) if r.get("B") == b and "verdict" in r)  # the test_acc table comes first
        assert (row["p (Welch)"], row["p_holm"]) == (cell(p), cell(p_holm))
    assert next(r for r in md_rows(md, "mha") if r.get("B") == "sha")["verdict"].startswith("sha better than mha")
    assert next(r for r in md_rows(md, "gqa") if r.get("B") == "mha")["verdict"].startswith("cannot be told apart")
    assert "Not tested (too few runs: one seed): mhe-add." in md
    assert not any(r.get("B") == "mhe-add" or r.get("A") == "mhe-add" for r in pairs.values())
    # bpc: lower is better, so sha wins again and its inverted ratio (MHA's over sha's) is above 1
    sha_bpc = next(r for r in md_rows(md, "sha") if "x MHA" in r and "test_bpc" in r)
    assert sha_bpc["x MHA"] == cell(float(np.mean(bpc["mha"])) / float(np.mean(bpc["sha"])))
    assert float(sha_bpc["x MHA"]) > 1
    bpc_rows = [r for r in md_rows(md, "mha") if r.get("B") == "sha" and "verdict" in r]
    assert len(bpc_rows) == 2 and bpc_rows[1]["verdict"].startswith("sha better than mha")


def test_no_seed_statistics_for_single_seed_runs(tmp_path):
    f = write(tmp_path / "t.jsonl", [train_rec(a, 0, 0.5) for a in ("mha", "sha")])
    md = report.build_report([f], tmp_path / "out", plots=False).markdown.read_text()
    assert "#### test_acc across seeds" not in md and "p_holm" not in md


# ---------------------------------------------------------------------------------------------- tasks (issue 13)
def sections(md: str) -> dict[str, str]:
    """Train section heading (### ...) -> its text up to the next heading of that level."""
    parts = re.split(r"^### ", md, flags=re.M)
    return {p.splitlines()[0]: p for p in parts[1:]}


def mqar_rec(attn, seed, acc, exact=None, opts=None, eval_ctx=None, **override):
    """A train record of a synthetic-task run as train.py writes it since issue 13: config.task, no test_bpc."""
    from attnbench.tasks import MQAROptions

    opts = opts if opts is not None else {"num_kv_pairs": 8, "seq_len": 128}
    r = train_rec(attn, seed, acc, task="mqar", task_opts=",".join(f"{k}={v}" for k, v in opts.items()),
                  ctx=opts["seq_len"], eval_stride=opts["seq_len"], **override)  # the task's length (sources.py)
    r["config"]["task"] = {"task": "mqar", **asdict(MQAROptions(**opts, seed=seed))}
    r["metrics"].update({"test_exact": exact, "attn_params": 100 if attn == "sha" else 300})
    if eval_ctx is not None:
        r["metrics"]["eval_ctx"] = eval_ctx
    return r


def test_tasks_are_sections_of_their_own(tmp_path):
    mq = {"mha": [0.90, 0.92, 0.94], "sha": [0.50, 0.52, 0.54]}
    recs = [mqar_rec(a, s, v, exact=v / 2) for a, vs in mq.items() for s, v in enumerate(vs)]
    recs += _seeded("mha", [0.55, 0.56, 0.57], [2.2, 2.2, 2.3]) + _seeded("sha", [0.54, 0.55, 0.56], [2.3, 2.3, 2.4])
    md = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    heads = [h for h in sections(md) if "preset" in h]
    assert heads == ["NVIDIA H100 80GB HBM3 (cuda) · preset tiny · task mqar (num_kv_pairs=8, seq_len=128)",
                     "NVIDIA H100 80GB HBM3 (cuda) · preset tiny · task shakespeare"]
    mqar, shakespeare = (sections(md)[h] for h in heads)
    # each section holds its own task's runs only: three seeds each, the means of that task
    assert [r["test_acc"] for r in md_rows(mqar, "sha") if "seeds" in r] == ["0.52 ± 0.02"]
    assert [r["test_acc"] for r in md_rows(shakespeare, "sha") if "seeds" in r] == ["0.55 ± 0.01"]
    # test_exact is tested on mqar; no bpc there (the metric is absent), bpc on Shakespeare
    assert "#### test_exact across seeds" in mqar and "#### test_bpc" not in mqar
    assert "#### test_bpc across seeds" in shakespeare and "#### test_exact" not in shakespeare
    sha = next(r for r in md_rows(mqar, "sha") if "x MHA" in r and "test_exact" in r)
    assert (sha["x MHA"], sha["attn_params"]) == (cell(0.52 / 0.92), "100")


def test_old_records_without_a_task_are_shakespeare(tmp_path):
    old = train_rec("mha", 0, 0.5)
    for k in ("task", "task_opts", "eval_ctx"):
        old["config"]["preset_fields"].pop(k, None)
    new = train_rec("mha", 1, 0.6, task="shakespeare", task_opts="", eval_ctx="128,256")
    new["config"]["task"] = {"task": "shakespeare"}
    md = report.build_report([write(tmp_path / "t.jsonl", [old, new])], tmp_path / "o", plots=False).markdown
    heads = [h for h in sections(md.read_text()) if "preset" in h]
    assert heads == ["NVIDIA H100 80GB HBM3 (cuda) · preset tiny · task shakespeare"]
    assert [r["seeds"] for r in md_rows(md.read_text(), "mha") if "seeds" in r] == ["2"]  # one series


def ctx_entries(acc_by_ctx, loss=1.0, na=()):
    out = [{"ctx": c, "loss": loss + c / 1000, "bpc": 1.0, "acc": a, "n": 1000} for c, a in acc_by_ctx.items()]
    out += [{"ctx": c, "status": "n/a", "reason": "learned absolute positions: a table of 128 rows"} for c in na]
    return sorted(out, key=lambda e: e["ctx"])


def test_length_extrapolation_table_ratio_and_plot(tmp_path):
    from attnbench import stats

    acc = {"mha": {128: [0.9, 0.91, 0.92], 256: [0.6, 0.62, 0.64]},
           "rmha": {128: [0.88, 0.9, 0.92], 256: [0.8, 0.81, 0.85]},
           "sha": {128: [0.85, 0.86, 0.87]}}  # sha: n/a at 256 for every seed
    recs = []
    for a, by_ctx in acc.items():
        for s in range(3):
            e = ctx_entries({c: v[s] for c, v in by_ctx.items()}, na=(256,) if a == "sha" else ())
            recs.append(mqar_rec(a, s, by_ctx[128][s], exact=0.5, eval_ctx=e))
    res = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out")
    md = res.markdown.read_text()
    assert "#### Length extrapolation" in md
    row = next(r for r in md_rows(md, "rmha") if "acc @256" in r)
    assert (row["trained ctx"], row["acc @128"]) == ("128", "0.9 ± 0.02")
    assert next(r for r in md_rows(md, "sha") if "acc @256" in r)["acc @256"] == "n/a: learned absolute positions"
    ratios = {a: next(r for r in md_rows(md, a) if "x MHA @256" in r) for a in acc}
    rr = stats.retention_ratio(acc["rmha"][256], acc["mha"][256])
    assert ratios["rmha"]["x MHA @256"] == \
        f"{cell(rr['ratio'])} [{cell(rr['delta_low'])}, {cell(rr['delta_high'])}]"
    assert rr["ratio"] == pytest.approx(np.mean(acc["rmha"][256]) / np.mean(acc["mha"][256]))
    assert ratios["sha"]["x MHA @256"] == "n/a" and ratios["sha"]["x MHA @128"].startswith(
        cell(np.mean(acc["sha"][128]) / np.mean(acc["mha"][128])))
    assert ratios["mha"]["x MHA @256"] == "baseline" and ratios["sha"]["attn_params"] == "100"
    # what the longer context gains, paired over seeds; sha (n/a at 256) has no row, every attention with a value
    # past its trained length has one; two rows a metric: Holm doubles the smaller p (scipy.stats.ttest_rel here)
    from scipy.stats import ttest_rel

    gains = {a: next(r for r in md_rows(md, a) if "Δ acc" in r) for a in ("mha", "rmha")}
    assert not [r for r in md_rows(md, "sha") if "Δ acc" in r]
    p = {a: ttest_rel(acc[a][256], acc[a][128]).pvalue for a in gains}
    assert gains["rmha"]["from → to"] == "128 → 256" and gains["rmha"]["n"] == "3"
    assert gains["rmha"]["Δ acc"].startswith(cell(np.mean(np.subtract(acc["rmha"][256], acc["rmha"][128]))) + " [")
    small, big = sorted(gains, key=p.get)
    assert gains[small]["acc p_holm"].endswith(f"({stats.format_p(min(1, 2 * p[small]), 'p_holm')})")
    assert gains["mha"]["acc p_holm"].startswith("worse") and min(1, 2 * p["mha"]) < 0.05
    assert gains["rmha"]["loss p_holm"] == "too few runs"  # loss 1 + c/1000 in every seed: no spread to test
    plot = next(p for p in res.plots if p.kind == "extrapolation")
    assert is_png(plot.path) and f"]({plot.path.name})" in md and sorted(plot.series) == sorted(acc)


def test_width_sweep_plot_table_and_ratio_at_the_same_width(tmp_path):
    acc = {("mha", 32): 0.5, ("mha", 64): 0.8, ("sha", 32): 0.4, ("sha", 64): 0.4}
    recs = [mqar_rec(a, s, v + 0.01 * (s - 1), d_model=w) for (a, w), v in acc.items() for s in range(3)]
    res = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out")
    md = res.markdown.read_text()
    assert "#### test_acc against model width" in md
    width = next(r for r in md_rows(md, "sha") if "d_model 64" in r)
    assert (width["d_model 32"], width["d_model 64"]) == ("0.4 ± 0.01 (3)", "0.4 ± 0.01 (3)")
    # sha at width 64 is divided by MHA at width 64 (0.4 / 0.8), not by MHA at 32 (0.4 / 0.5)
    sha64, sha32 = (next(r for r in md_rows(md.split(f"across seeds at d_model {w}")[1], "sha")
                         if "x MHA" in r and "test_acc" in r) for w in (64, 32))
    assert (sha64["x MHA"], sha32["x MHA"]) == ("0.5", "0.8")
    assert sha64["attn_params x MHA"] == cell(100 / 300)  # what that retention costs in attention parameters
    plot = next(p for p in res.plots if p.kind == "width")
    assert is_png(plot.path) and f"]({plot.path.name})" in md and plot.series == ["mha", "sha"]


def test_width_sweep_takes_each_attentions_best_learning_rate_by_validation(tmp_path):
    """sha at two learning rates at each width: its cell and point are the rate with the better validation accuracy,
    although that rate's test accuracy is the lower one (the choice is never made on test); one section."""
    recs = []
    for w in (32, 64):
        for s in range(3):
            recs.append(mqar_rec("mha", s, 0.8 + 0.01 * (s - 1), d_model=w))  # the tiny preset's lr, 3e-3
            for lr, val, test in ((1e-3, 0.9, 0.3), (3e-3, 0.5, 0.6)):
                r = mqar_rec("sha", s, test + 0.01 * (s - 1), d_model=w, lr=lr)
                r["metrics"]["val_acc_best"] = val
                recs.append(r)
    res = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out")
    md = res.markdown.read_text()
    assert [h for h in sections(md) if "preset" in h] == \
        ["NVIDIA H100 80GB HBM3 (cuda) · preset tiny · d_model 32, 64 · lr 0.001, 0.003 · task mqar "
         "(num_kv_pairs=8, seq_len=128)"]
    row = next(r for r in md_rows(md, "sha") if "d_model 64" in r)
    assert (row["d_model 32"], row["d_model 64"]) == ("0.3 ± 0.01 (3) at lr 0.001",) * 2
    assert next(r for r in md_rows(md, "mha") if "d_model 64" in r)["d_model 64"] == "0.8 ± 0.01 (3)"
    assert next(p for p in res.plots if p.kind == "width").series == ["mha", "sha"]
    # the tests at each width compare sha at that rate only: one pair, mha against sha lr=0.001, not two
    for w in (32, 64):
        block = md.split(f"#### test_acc across seeds at d_model {w}")[1].split("####")[0]
        pairs = [(r["A"], r["B"]) for r in md_table_rows(block) if "p_holm" in r]
        assert pairs == [("mha", "sha lr=0.001")]
        assert "not compared here: sha lr=0.003." in block


def test_no_width_sweep_without_one(tmp_path):
    recs = [mqar_rec(a, s, 0.5) for a in ("mha", "sha") for s in range(2)]
    res = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out")
    assert "against model width" not in res.markdown.read_text() and not [p for p in res.plots if p.kind == "width"]


def test_latest_orders_line_numbers_as_numbers(tmp_path):
    """A rerun at the same sizes replaces the earlier row: line 11 is later than line 9 of the same file."""
    recs = [params_rec("mha", n) for n in range(1, 12)]
    for r in recs:
        r["time_utc"] = "2026-01-01T00:00:00+00:00"
    f = write(tmp_path / "p.jsonl", recs)
    md = report.build_report([f], tmp_path / "out", plots=False).markdown.read_text()
    assert [r["params"] for r in md_rows(md, "mha")] == ["11"]
    shuffled = [{"_source": f"f:{i}", "time_utc": "t"} for i in (9, 10, 2, 11, 1)]
    assert [r["_source"] for r in _latest(shuffled)] == ["f:1", "f:2", "f:9", "f:10", "f:11"]


def test_old_gqa_records_are_labelled_mqa(tmp_path):
    """Before issue 13 GQA's default was kv_heads = n_heads // 4: at 4 heads 1 K/V head, i.e. MQA. Such a record
    (no attn_config, kv_heads unset) must not read as GQA; a new record at the new default (2) reads as gqa."""
    old = [train_rec("gqa", s, 0.5) for s in range(2)]
    for r in old:
        del r["config"]["attn_config"]
    new = [train_rec("gqa", s, 0.6) for s in range(2)]  # attn_config.kv_heads = 2
    forced = [train_rec("gqa", s, 0.7, kv_heads=1) for s in range(2)]  # a new record set to g = 1
    mha = [train_rec("mha", s, 0.6) for s in range(2)]
    for r in mha:
        del r["config"]["attn_config"]  # an old mha record: never labelled
    md = report.build_report([write(tmp_path / "t.jsonl", old + new + forced + mha)], tmp_path / "o",
                             plots=False).markdown.read_text()
    tiny = sections(md)["NVIDIA H100 80GB HBM3 (cuda) · preset tiny · task shakespeare"]
    got = {r["attention"]: r["test_acc"] for a in ("gqa", "mha") for r in md_rows(tiny, a) if "seeds" in r}
    got.update({r["attention"]: r["test_acc"] for r in md_rows(tiny, "gqa kv_heads=1 (1 K/V head: MQA)")
                if "seeds" in r})
    got.update({r["attention"]: r["test_acc"] for r in md_rows(tiny, "gqa kv_heads=2") if "seeds" in r})
    assert got == {"gqa kv_heads=1 (1 K/V head: MQA)": "0.5", "gqa kv_heads=2": "0.6", "mha": "0.6"}
    custom = sections(md)["NVIDIA H100 80GB HBM3 (cuda) · preset custom · task shakespeare"]  # --kv-heads 1
    assert [r["test_acc"] for r in md_rows(custom, "gqa (1 K/V head: MQA)") if "seeds" in r] == ["0.7"]


def test_degenerate_note_comes_from_the_attention():
    assert report.degenerate_note("gqa", {"d_model": 384, "n_heads": 6, "kv_heads": 1}) == "1 K/V head: MQA"
    assert report.degenerate_note("gqa", {"d_model": 384, "n_heads": 6, "kv_heads": 6}) == "6 K/V heads: MHA"
    assert report.degenerate_note("gqa", {"d_model": 384, "n_heads": 6, "kv_heads": 2}) is None
    assert report.degenerate_note("mha", {"d_model": 384, "n_heads": 6, "kv_heads": 1}) is None
    assert report.degenerate_note("no/such.py:X", {"d_model": 384, "n_heads": 6, "kv_heads": 1}) is None


def test_records_older_than_a_field_match_their_preset_and_series():
    """A field added to TrainConfig after a record was written (flavour, max_rel, task, ...) reads as its default:
    the old record still matches its preset and pools with a new record of the same settings; a record whose
    field differs from the preset (rcmha trained with relu2) does not."""
    from attnbench.record_groups import train_settings
    from attnbench.report import train_preset

    new = train_rec("mha", 0, 0.5, preset="default")
    old = train_rec("mha", 1, 0.5, preset="default")
    for k in ("flavour", "max_rel", "task", "task_opts", "eval_ctx"):
        del old["config"]["preset_fields"][k]
    assert train_preset(old) == train_preset(new) == "default"
    assert train_settings(old)[1] == train_settings(new)[1]
    other = train_rec("mha", 2, 0.5, preset="default", act="relu2")
    assert train_preset(other) == "custom"


def test_a_seed_run_twice_counts_once_and_old_records_get_their_attention_parameters():
    """n counts independent seeds (a rerun of seed 0 at a later commit replaces the earlier record), and a record
    without metrics.attn_params gets the count of the registered attention built with its settings."""
    from attnbench.attention import build
    from attnbench.config import AttnConfig
    from attnbench.report import attn_params, one_per_seed

    a, b = train_rec("mha", 0, 0.50), train_rec("mha", 0, 0.60)
    a["time_utc"], b["time_utc"] = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
    c = train_rec("mha", 1, 0.55)
    kept = one_per_seed([b, c, a])
    assert sorted(r["metrics"]["test_acc"] for r in kept) == [0.55, 0.60]
    f = a["config"]["preset_fields"]
    layer = build("gqa", cfg=AttnConfig(d_model=f["d_model"], n_heads=f["n_heads"], kv_heads=1))
    old = train_rec("gqa", 0, 0.5)
    del old["config"]["attn_config"]  # an old record: kv_heads by the n_heads // 4 rule of its version (4 -> 1)
    assert attn_params(old) == f["n_layers"] * sum(p.numel() for p in layer.parameters())
    old["metrics"]["attn_params"] = 7
    assert attn_params(old) == 7


# ---------------------------------------------------------------------------------------------- not numbers
def test_a_value_that_is_not_a_number_is_named_and_its_column_kept(tmp_path):
    """A record holding "high", NaN or inf where a figure belongs: the column stays, the cell reads n/a (or the
    mean of the seeds that hold numbers, with their count), and a note names each bad value by file:line."""
    recs = [train_rec("mha", 0, "high"), train_rec("mha", 1, float("nan")), train_rec("sha", 0, 0.5),
            train_rec("sha", 1, float("inf")), speed_rec("mha", 64, 1.0), speed_rec("rmha", 64, 2.0)]
    recs[-1]["metrics"]["tokens_per_s"] = "fast"
    f = write(tmp_path / "t.jsonl", recs)
    res = report.build_report([f], tmp_path / "out", plots=False)
    md = res.markdown.read_text()
    assert [r["test_acc"] for r in md_rows(md, "mha") if "seeds" in r] == ["n/a"]
    assert [r["test_acc"] for r in md_rows(md, "sha") if "seeds" in r] == ["0.5 (n=1)"]
    assert next(r for r in md_rows(md, "rmha") if "median_ms" in r)["tokens_per_s"] == "n/a"
    bad = [n for n in res.notes if "not a number" in n]
    assert bad == [f"{f}:1: train metric test_acc is 'high', not a number (shown as n/a)",
                   f"{f}:2: train metric test_acc is nan, not a number (shown as n/a)",
                   f"{f}:4: train metric test_acc is inf, not a number (shown as n/a)",
                   f"{f}:6: speed metric tokens_per_s is 'fast', not a number (shown as n/a)"]
    assert all(f"> {n}" in md for n in bad)
    out = CliRunner().invoke(app, ["report", str(f), "--out", str(tmp_path / "o"), "--no-plots"])
    assert out.exit_code == 0 and f"note: {bad[0]}" in out.stderr.replace("\n", "")


def test_compare_names_a_value_that_is_not_a_number(tmp_path):
    a = write(tmp_path / "a.jsonl", [speed_rec("mha", 64, 10.0)])
    bad = speed_rec("mha", 64, 10.0)
    bad["metrics"]["median_ms"] = "high"
    b = write(tmp_path / "b.jsonl", [bad])
    res = report.compare([a], [b])
    (row,) = res.rows
    assert (row["a"], row["b"], row["change_pct"]) == (10.0, "n/a", None)
    assert f"{b}:1: speed metric median_ms is 'high', not a number (shown as n/a)" in res.notes


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "h100" / "spread-38a3c8e"


def test_committed_records_still_read_by_report_and_compare(tmp_path):
    """The records under results/ keep their keys (snake_case already; only the screen's headers changed): report
    and --compare read a committed run as before."""
    a, b = sorted(COMMITTED.glob("speed-*.jsonl"))
    res = report.compare([a], [b])
    assert res.rows and not res.problems and not [n for n in res.notes if "not a number" in n]
    assert {r["metric"] for r in res.rows} == {"median_ms"} and all(isinstance(r["change_pct"], float)
                                                                    for r in res.rows)
    md = report.build_report([a], tmp_path / "out", plots=False).markdown.read_text()
    first = json.loads(a.read_text().splitlines()[0])
    row = next(r for r in md_rows(md, first["attn"] or first["config"]["name"]) if "median_ms" in r)
    assert row["median_ms"] == cell(first["metrics"]["median_ms"])


def test_compare_reads_the_parameter_count_params_records_hold():
    """params --save writes qkv, out, other and total (no "params"): --compare compares total, not nothing."""
    f = sorted((COMMITTED.parent.parent / "params").glob("params-*.jsonl"))[0]
    res = report.compare([f], [f])
    assert {(r["metric"], r["change_pct"], r["flag"]) for r in res.rows} == {("total", 0.0, "")}
    assert sorted(r["attention"] for r in res.rows) == sorted(json.loads(line)["attn"]
                                                              for line in f.read_text().splitlines())


def test_a_width_sweep_compares_attentions_at_each_width_never_across(tmp_path):
    """Welch + Holm per width: no pair mixes two widths, and each width's p_holm is Holm over that width's pairs
    alone (one family of 36 x 35 / 2 pairs across four widths would compare recall at D=64 with D=512)."""
    from attnbench import stats

    acc = {("mha", 32): [0.5, 0.52, 0.55], ("sha", 32): [0.4, 0.41, 0.43], ("gqa", 32): [0.45, 0.5, 0.47],
           ("mha", 64): [0.8, 0.82, 0.81], ("sha", 64): [0.3, 0.33, 0.31], ("gqa", 64): [0.7, 0.75, 0.72]}
    recs = [mqar_rec(a, s, v[s], d_model=w) for (a, w), v in acc.items() for s in range(3)]
    md = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    for w in (32, 64):
        assert f"#### test_acc across seeds at d_model {w} (higher is better)" in md
        block = md.split(f"#### test_acc across seeds at d_model {w}")[1].split("####")[0]
        pairs = [r for r in md_table_rows(block) if "p_holm" in r]
        assert {frozenset((r["A"], r["B"])) for r in pairs} == {frozenset(p) for p in (("gqa", "mha"), ("gqa", "sha"),
                                                                                       ("mha", "sha"))}
        at_w = {a: v for (a, ww), v in acc.items() if ww == w}
        want = {frozenset((p["a"], p["b"])): p["p_holm"] for p in stats.pairwise(at_w, higher_is_better=True)}
        for r in pairs:
            assert float(r["p_holm"]) == pytest.approx(want[frozenset((r["A"], r["B"]))], rel=1e-3)
        ratio = next(r for r in md_table_rows(block) if r.get("attention") == "sha" and "x MHA" in r)
        assert float(ratio["x MHA"]) == pytest.approx(np.mean(acc[("sha", w)]) / np.mean(acc[("mha", w)]), rel=1e-3)
    rows = [r["attention"] for r in md_table_rows(md) if "seeds" in r and "failed" in r]
    assert rows == sorted(rows, key=lambda a: (a.split()[0], int(a.split("d_model=")[1])))  # 32 before 64, as numbers


def test_a_baseline_that_fails_where_another_succeeds_is_flagged_at_its_width_only(tmp_path):
    """At D=64 MHA is beaten (p_holm < 0.05): its ratios there measure its failure, and the report says so; at D=32
    MHA is the best, and nothing is flagged."""
    acc = {("mha", 32): [0.95, 0.96, 0.97], ("mdha", 32): [0.90, 0.91, 0.92], ("sha", 32): [0.40, 0.41, 0.43],
           ("mha", 64): [0.09, 0.10, 0.09], ("mdha", 64): [0.99, 1.0, 0.995], ("sha", 64): [0.09, 0.095, 0.10]}
    recs = [mqar_rec(a, s, v[s], d_model=w) for (a, w), v in acc.items() for s in range(3)]
    md = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    blocks = {w: md.split(f"#### test_acc across seeds at d_model {w}")[1].split("####")[0] for w in (32, 64)}
    assert "not a baseline to keep here" not in blocks[32]
    flagged = [line for line in blocks[64].splitlines() if "not a baseline to keep here" in line]
    assert len(flagged) == 1 and "worse than mdha (" in flagged[0]  # sha, at MHA's level, is not named


def test_a_width_sweep_counts_the_seeds_that_solve_and_tests_the_counts_against_mha(tmp_path):
    """Seeds split into solved (>= 0.9) and stuck at the plateau: the report counts them per width and tests each
    attention's counts against MHA's with the exact test stratified by width (stats.exact_strata), Holm over the
    attentions; an attention that solves every seed where MHA does is not testable, not 'too few runs'."""
    from attnbench import stats

    acc = {("mha", 32): [0.95, 0.97, 0.99], ("mha", 64): [0.99, 0.98, 0.99],
           ("sha", 32): [0.10, 0.12, 0.91], ("sha", 64): [0.10, 0.11, 0.09],
           ("gqa", 32): [0.93, 0.10, 0.95], ("gqa", 64): [0.96, 0.97, 0.10],
           ("mdha", 32): [0.99, 0.99, 0.98], ("mdha", 64): [1.0, 0.99, 1.0]}
    recs = [mqar_rec(a, s, v[s], d_model=w) for (a, w), v in acc.items() for s in range(3)]
    md = report.build_report([write(tmp_path / "t.jsonl", recs)], tmp_path / "out", plots=False).markdown.read_text()
    block = md.split("Seeds that solve")[1]
    rows = {r["attention"]: r for r in md_table_rows(block) if "solved" in r}
    assert (rows["sha"]["d_model 32"], rows["sha"]["d_model 64"], rows["sha"]["solved"]) == ("1/3", "0/3", "1/6")
    assert rows["gqa"]["solved"] == "4/6" and rows["mha"]["solved"] == "6/6"
    p = {a: stats.exact_strata([(sum(v >= 0.9 for v in acc[(a, w)]), 3, sum(v >= 0.9 for v in acc[("mha", w)]), 3)
                                for w in (32, 64)])["p"] for a in ("sha", "gqa")}
    adj = dict(zip(p, stats.holm(list(p.values()))))
    for a in p:
        assert float(rows[a]["p vs mha"]) == pytest.approx(p[a], rel=1e-3)
        assert float(rows[a]["p_holm"]) == pytest.approx(adj[a], rel=1e-3)
    assert p["sha"] < p["gqa"] and rows["sha"]["verdict"].startswith(("mha better than sha", "cannot be told apart"))
    assert rows["mdha"]["verdict"].startswith("not testable")
    # a sweep where no seed reaches 0.9 (Shakespeare-like accuracies) has no such table
    low = [mqar_rec(a, s, 0.5 + 0.01 * s, d_model=w) for a in ("mha", "sha") for w in (32, 64) for s in range(3)]
    md = report.build_report([write(tmp_path / "u.jsonl", low)], tmp_path / "out2", plots=False).markdown.read_text()
    assert "against model width" in md and "Seeds that solve" not in md


def test_a_training_section_says_the_device_time_its_runs_took(tmp_path):
    """Three seeds stacked as one model (each record holds the group's 30 s) cost 30 s, not 90; a run alone its
    own wall; a record from before the stacked engine (no group size) counts as a run alone."""
    recs = [mqar_rec("mha", s, 0.9) for s in range(3)] + [mqar_rec("sha", s, 0.5) for s in range(2)]
    for r, wall, n in zip(recs, (30.0, 30.0, 30.0, 12.0, 8.0), (3, 3, 3, 1, None)):
        r["metrics"]["wall_s"] = wall
        if n is not None:
            r["config"]["ensemble"] = n
    solo, old = recs[3:]
    recs = recs[:3]
    assert "ensemble" not in old["config"]
    md = report.build_report([write(tmp_path / "t.jsonl", [*recs, solo, old])], tmp_path / "out",
                             plots=False).markdown.read_text()
    assert "The 5 runs took 50 s of wall in all" in md


def test_a_run_of_epochs_is_not_told_apart_by_its_unused_steps_field():
    """With epochs set, TrainConfig derives the steps (config.py): two such runs whose recorded `steps` field differs
    trained the same length and are one configuration; a run of a fixed step count stays apart, labelled by its steps
    and not by its unused epochs=0.0."""
    from attnbench.record_groups import train_settings

    a, b, fixed = (train_rec("mha", s, 0.5, preset="default") for s in range(3))
    a["config"]["preset_fields"].update(epochs=10, steps=5000)
    b["config"]["preset_fields"].update(epochs=10, steps=3000)
    fixed["config"]["preset_fields"].update(epochs=0.0, steps=3000)
    assert train_settings(a)[1] == train_settings(b)[1] and "steps" not in train_settings(a)[1]
    assert train_settings(fixed)[1]["steps"] == 3000 != train_settings(a)[1].get("steps")
    assert "epochs" not in train_settings(fixed)[1] and train_settings(a)[1]["epochs"] == 10
