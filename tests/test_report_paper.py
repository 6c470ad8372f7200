"""The report's "RCMHA paper, reproduced" section on constructed paper-preset records whose means are known: a pair
that clearly differs, a pair that does not, an empty cell, a single-seed cell, records of another preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench import report, stats
from attnbench.attention import get
from attnbench.report import paper
from attnbench.results import append, make_record
from attnbench.results import read as results_read

OFFSETS = (-0.002, -0.001, 0.0, 0.001, 0.002)  # five seeds around each mean: std 0.00158
# paper_acc means at act relu: rcmha and rmha clearly above mha, mdha indistinguishable from mha.
RELU = {"rcmha": 0.600, "mha": 0.566, "mdha": 0.5665, "rmha": 0.580}
RELU2 = {"rcmha": 0.610, "mdha": 0.570}  # mha relu2 gets one seed, rmha relu2 none


def env(name="NVIDIA H200", device="cuda"):
    return {"device": device, "device_name": name, "driver": "570.1", "cuda": "12.8", "torch": "2.9.0"}


def rec(attn, seed, acc, act="relu", preset="paper", status="ok", gap=0.05, bpc=2.0, e=None, wall=600.0,
        runs=4, **fields):
    """A record as paper_run.py writes it (issue 12): one run of a lockstep group of `runs` runs."""
    preset_fields = {"act": act, "flavour": "labml", "mem_len": 32, "ctx": 2, "d_model": 128, "epochs": 10,
                     "seed": seed, "device": "cuda", "cuda_graph": True, **fields}
    config = {"preset": preset, "preset_fields": preset_fields, "attn": attn, "seed": seed, "runs_in_group": runs,
              "group": [[attn, seed]], "cuda_graph": "on"}
    metrics = {} if status != "ok" else {
        "paper_acc": acc, "test_acc": acc - gap, "test_loss": bpc * 0.693,
        "test_bpc": bpc, "test_n": 111_540, "steps": 156_850, "tokens": 160_614_400, "wall_s": wall,
        "alloc_peak_mib": 1536.0, "reserved_peak_mib": 2048.0, "nvml_peak_mib": 3072.0, "nvml_avg_mib": 2560.0,
        "params": 7_500_000}
    return make_record("train", attn, "attnbench train --preset paper", config, metrics, e or env(), status=status,
                       reason=None if status == "ok" else "crashed")


def seeds(attn, mean, act="relu", bpc=2.0, **kw):
    return [rec(attn, s, mean + d, act=act, bpc=bpc + d, **kw) for s, d in enumerate(OFFSETS)]


def grid_records():
    recs = [r for a, m in RELU.items() for r in seeds(a, m, gap=0.0635 if a == "rmha" else 0.05)]
    recs += [r for a, m in RELU2.items() for r in seeds(a, m, act="relu2", bpc=1.9)]
    recs += [rec("mha", 0, 0.571, act="relu2")]  # a single seed
    recs += [rec("mha", 7, None, status="error")]  # a failed run: counted, never averaged
    recs += [rec("mha", s, 0.9, preset="default") for s in range(5)]  # another preset: ignored
    return recs


def write(path: Path, recs) -> Path:
    for r in recs:
        append(path, r)
    return path


def md_rows(md: str, first: str, column: str) -> list[dict[str, str]]:
    """Every Markdown table row whose first cell is `first`, in tables that have `column`, as {column: cell}."""
    lines, out, header = md.splitlines(), [], None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|--"):
            header = cells
        elif line.startswith("|") and not line.startswith("|--") and header and cells[0] == first \
                and column in header:
            out.append(dict(zip(header, cells)))
    return out


def one(md: str, first: str, column: str, **match) -> dict[str, str]:
    rows = [r for r in md_rows(md, first, column) if all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return rows[0]


def claim(md: str, a: str, b: str, act: str) -> str:
    """The sentence of the claim 'a > b' under the heading of activation `act`."""
    block = md.split(f"claims with act {act}:")[1].split("\n\n", 2)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith(f"- {a} > {b} ")]
    assert len(lines) == 1, block
    return lines[0]


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper")
    f = write(d / "train-paper.jsonl", grid_records())
    return report.build_report([f], d / "out", plots=False).markdown.read_text()


def test_the_paper_figures_are_on_the_classes():
    assert {a: get(a).paper_figures["acc"] for a in ("rcmha", "mha", "mdha", "rmha")} == \
        {"rcmha": 0.572, "mha": 0.566, "mdha": 0.557, "rmha": 0.555}
    assert (get("rcmha").paper_figures["avg_memory_gb"], get("rcmha").paper_figures["train_time_s"]) == (2.98, 7320)


def test_table_beside_the_paper(md):
    assert "## RCMHA paper, reproduced" in md
    row = one(md, "rcmha", "paper: acc", act="relu")
    assert (row["runs"], row["failed"], row["paper_acc"], row["paper: acc"], row["test_acc"], row["test_bpc"]) == \
        ("5", "0", "0.6 ± 0.001581", "0.572", "0.55 ± 0.001581", "2 ± 0.001581")
    assert row["95% CI"] == "[0.598, 0.602]"  # 0.6 ± t(0.975, 4) 0.001581 / sqrt(5) = 0.6 ± 0.00196
    # the failed run is counted beside the five good ones; the default-preset records (0.9) are not there at all
    assert one(md, "mha", "paper: acc", act="relu")[paper.PAPER_ACC] == "0.566 ± 0.001581"
    assert one(md, "mha", "paper: acc", act="relu")["failed"] == "1"
    # memory in GiB, the group's wall time and its share per run, the paper's 2.98 GB and 2 h 02 min beside
    cost = one(md, "rcmha", "paper: time", act="relu")
    assert (cost["alloc peak GiB"], cost["NVML peak GiB"], cost["NVML avg GiB"], cost["paper: avg GB"]) == \
        ("1.5 ± 0", "3 ± 0", "2.5 ± 0", "2.98")
    assert (cost["wall"], cost["runs in group"], cost["wall / run"], cost["paper: time"], cost["steps"]) == \
        ("10 min 00 s", "4", "2 min 30 s", "2 h 02 min", "156,850")
    assert one(md, "mha", "paper: time", act="relu")["paper: time"] == "—"  # the paper reports rcmha's alone
    # 31 finished runs (the failed one is not), each a quarter of its group's 600 s: 4,650 s of device wall
    assert "The 31 finished runs of this table took 4,650 s of device wall in all (1 h 18 min;" in md


def test_claims_hold_fail_or_cannot_be_told_apart(md):
    assert claim(md, "rcmha", "mha", "relu") == ("- rcmha > mha (paper 0.572 > 0.566): paper_acc holds (+0.0340, "
                                                 "p_holm<0.001); test_acc holds (+0.0340, p_holm<0.001).")
    assert "paper_acc cannot be told apart at n=5 (-0.0005, p_holm=" in claim(md, "mha", "mdha", "relu")
    # rmha's paper_acc is clearly above mha's, its test_acc level with it (RELU; gap 0.0635 instead of 0.05)
    assert claim(md, "mha", "rmha", "relu").startswith(
        "- mha > rmha (paper 0.566 > 0.555): paper_acc does not hold: the opposite is significant (-0.0140, "
        "p_holm<0.001); test_acc cannot be told apart at n=5 (-0.0005, p_holm=")
    assert "paper_acc does not hold: the opposite is significant" in claim(md, "mdha", "rmha", "relu")
    assert "paper_acc holds" in claim(md, "rcmha", "rmha", "relu")
    assert "paper_acc holds" in claim(md, "rcmha", "mdha", "relu")
    # every pair of the paper's ordering 0.572 > 0.566 > 0.557 > 0.555, and nothing else
    block = md.split("claims with act relu:")[1].split("\n\n", 2)[1]
    assert len([ln for ln in block.splitlines() if ln.startswith("- ")]) == 6
    # at relu2: mha has one seed, rmha none
    assert "paper_acc too few runs (n=5 vs 1)" in claim(md, "rcmha", "mha", "relu2")
    assert "paper_acc no runs of rmha" in claim(md, "mha", "rmha", "relu2")
    assert "paper_acc holds" in claim(md, "rcmha", "mdha", "relu2")


def test_the_paper_figure_inside_or_outside_our_interval(md):
    assert "- mha (act relu, n=5): the paper's 0.566 lies inside our 95 % CI [0.564, 0.568]." in md
    assert "- rcmha (act relu, n=5): the paper's 0.572 lies below our 95 % CI [0.598, 0.602] (ours 0.6, +0.0280)." \
        in md
    assert "- mha (act relu2, n=1): too few runs for an interval; ours 0.571, the paper's 0.566." in md


def test_ablation_grid_with_missing_and_single_cells(md):
    rows = md_rows(md, "rmha", "relative")
    assert [(r["conv"], r["relative"], r["act"], r["n"]) for r in rows] == [("no", "yes", "relu", "5"),
                                                                           ("no", "yes", "relu2", "0")]
    assert (rows[1]["paper_acc"], rows[1]["test_bpc"]) == ("—", "—")
    cells = {(a, r["act"]): (r["conv"], r["relative"]) for a in ("mha", "mdha", "rmha", "rcmha")
             for r in md_rows(md, a, "relative")}
    assert len(cells) == 8 and set(cells.values()) == {("no", "no"), ("yes", "no"), ("no", "yes"), ("yes", "yes")}
    assert one(md, "mha", "relative", act="relu2")["paper_acc"] == "0.571"


def test_ablation_effects_within_every_level(md):
    eff = {r["contrast"]: r for r in md_rows(md, "conv", "contrast") + md_rows(md, "relative", "contrast")
           + md_rows(md, "act", "contrast")}
    assert len(eff) == 12  # each factor within the 4 levels of the other two
    assert eff["mdha − mha (relu)"]["within"] == "relative no · act relu"
    assert eff["mdha − mha (relu)"]["Δ paper_acc [95% CI]"].startswith("+0.0005 [")
    assert float(eff["mdha − mha (relu)"]["p_holm (paper_acc)"]) > 0.05  # not told apart
    assert eff["rcmha − rmha (relu)"]["p_holm (paper_acc)"] == "<0.001"  # +0.02: told apart
    assert eff["rmha − mha (relu)"]["factor"] == "relative"
    assert eff["relu2 − relu (mha)"]["p_holm (paper_acc)"] == "too few runs"
    assert eff["relu2 − relu (mha)"]["Δ paper_acc [95% CI]"] == "+0.005"  # one seed: a difference, no interval
    assert (eff["relu2 − relu (rmha)"]["Δ paper_acc [95% CI]"], eff["relu2 − relu (rmha)"]["p_holm (test_bpc)"]) \
        == ("—", "—")
    assert eff["relu2 − relu (rcmha)"]["Δ test_bpc [95% CI]"].startswith("-0.1 [")
    assert eff["relu2 − relu (rcmha)"]["within"] == "conv yes · relative yes"


def test_the_main_effects_and_interactions_of_a_full_grid():
    """Eight cells whose means are 0.5 + 0.01 c + 0.02 r + 0.005 c r (c, r = ±1 for convolution and relative
    scoring; the activation does nothing): main effects +0.02 (conv) and +0.04 (relative), conv × relative +0.02
    (conv's effect +0.03 with relative scoring, +0.01 without), the rest 0 and not told apart; each p against
    stats.contrast on the same cells, Holm over the seven effects."""
    lv = {"mha": (-1, -1), "mdha": (1, -1), "rmha": (-1, 1), "rcmha": (1, 1)}
    mean = {a: 0.5 + 0.01 * c + 0.02 * r + 0.005 * c * r for a, (c, r) in lv.items()}
    recs = [r for act in paper.ACTS for a, m in mean.items() for r in seeds(a, m, act=act, runs=5)]
    md = "\n".join(paper.section(recs))
    eff = {name: one(md, name, "runs per cell") for name, _ in paper.factorial_effects()}
    assert list(eff) == ["conv", "relative", "act", "conv × relative", "conv × act", "relative × act",
                         "conv × relative × act"]
    got = {k: float(r["paper_acc [95% CI]"].split(" [")[0]) for k, r in eff.items()}
    assert got == pytest.approx({"conv": 0.02, "relative": 0.04, "act": 0, "conv × relative": 0.02,
                                 "conv × act": 0, "relative × act": 0, "conv × relative × act": 0}, abs=1e-9)
    assert [eff[k]["p_holm (paper_acc)"] for k in ("conv", "relative", "conv × relative")] == ["<0.001"] * 3
    assert all(float(eff[k]["p_holm (paper_acc)"]) > 0.05 for k in ("act", "conv × act", "conv × relative × act"))
    assert eff["conv"]["runs per cell"] == "5" and float(eff["conv"]["df (paper_acc)"]) == pytest.approx(32)
    # the planted interaction's p before Holm, recomputed from the cells directly
    ok, _ = paper.cells(recs)
    name, weights = paper.factorial_effects()[3]
    raw = stats.contrast([paper.values(ok[c], paper.PAPER_ACC) for c, _ in weights], [w for _, w in weights])
    assert name == "conv × relative" and raw["diff"] == pytest.approx(0.02) and raw["p"] < 1e-6
    assert "Welch contrasts, not an ANOVA" in md


def test_main_effects_wait_for_a_full_grid(md):
    assert "Main effects and interactions: not computed until every cell of the grid has two runs or more " \
           "(short: mha relu2, rmha relu2)." in md


def test_a_memory_probe_is_listed_apart_and_never_averaged_with_full_runs():
    """A fixed-step solo run (`gpu_paper.sh memory`) of a cell that has full runs: the cell's table keeps its five
    full runs and their accuracy; the probe has its own table of memory, and no claim or interval counts it."""
    probe = rec("mha", 0, 0.27, runs=1, epochs=0, steps=3000)
    probe["metrics"]["steps"] = 3000
    md = "\n".join(paper.section([*seeds("mha", 0.56, runs=5), *seeds("rcmha", 0.59, runs=5), probe]))
    assert one(md, "mha", "paper: acc")[paper.PAPER_ACC] == "0.56 ± 0.001581"
    assert "### NVIDIA H200 (cuda) · memory probes" in md
    probes = md.split("memory probes")[1]
    assert one(probes, "mha", "alloc peak GiB")["steps"] == "3,000" and "paper_acc" not in probes
    assert [ln for ln in md.splitlines() if ln.startswith("### ")] == ["### NVIDIA H200 (cuda)",
                                                                      "### NVIDIA H200 (cuda) · memory probes"]


def test_single_seed_groups_say_too_few_runs():
    lines = "\n".join(paper.section([rec("rcmha", 0, 0.57), rec("mha", 0, 0.56)]))
    assert one(lines, "rcmha", "paper: acc")["95% CI"] == "too few runs"
    assert "paper_acc too few runs (n=1); test_acc too few runs (n=1)." in claim(lines, "rcmha", "mha", "relu")
    assert "- rcmha (act relu, n=1): too few runs for an interval" in lines


def test_other_presets_and_no_paper_runs_give_no_section():
    assert paper.section([rec("mha", s, 0.5, preset="default") for s in range(3)]) == []
    assert paper.section([]) == []


def test_devices_and_configurations_are_never_pooled():
    recs = seeds("mha", 0.56) + seeds("mha", 0.40, e=env("CPU", "cpu")) + seeds("mha", 0.30, mem_len=0)
    lines = "\n".join(paper.section(recs))
    heads = [ln for ln in lines.splitlines() if ln.startswith("### ")]
    assert heads == ["### CPU (cpu)", "### NVIDIA H200 (cuda) · mem_len=0", "### NVIDIA H200 (cuda) · mem_len=32"]
    assert sorted(r["paper_acc"] for r in md_rows(lines, "mha", "paper: acc")) == \
        ["0.3 ± 0.001581", "0.4 ± 0.001581", "0.56 ± 0.001581"]


def test_a_stacked_cell_reads_its_memory_off_a_solo_run_of_the_same_cell_and_device():
    """Stacked records hold their group's memory only (group_* keys): the cell's memory columns come from the run of
    the same attention and activation trained alone on the same device, whatever its length, marked (solo); a cell
    without such a run reads —; a solo run of another activation or device is never used."""
    stacked = seeds("rcmha", 0.59, runs=5) + seeds("mdha", 0.57, runs=5)
    for r in stacked:
        for key, _ in paper.MEMORY:
            r["metrics"]["group_" + key] = 5 * r["metrics"].pop(key)
    solo = rec("rcmha", 0, 0.3, runs=1, epochs=0, steps=3000)
    solo["metrics"].update(alloc_peak_mib=1024.0, nvml_peak_mib=2048.0, nvml_avg_mib=1536.0)
    decoys = [rec("rcmha", 0, 0.3, act="relu2", runs=1, epochs=0, steps=3000),
              rec("mdha", 0, 0.3, runs=1, epochs=0, steps=3000, e=env("NVIDIA H100 80GB HBM3"))]
    md = "\n".join(paper.section([*stacked, solo, *decoys]))
    row = one(md, "rcmha", "alloc peak GiB", runs="5")
    assert (row["alloc peak GiB"], row["NVML peak GiB"], row["NVML avg GiB"]) == ("1 (solo)", "2 (solo)", "1.5 (solo)")
    assert one(md, "mdha", "alloc peak GiB", runs="5")["alloc peak GiB"] == "—"


def test_a_rerun_of_a_seed_replaces_the_earlier_record():
    old = rec("mha", 0, 0.10)
    old["time_utc"] = "2026-01-01T00:00:00+00:00"
    lines = "\n".join(paper.section([old, *seeds("mha", 0.56)]))
    assert one(lines, "mha", "paper: acc")["runs"] == "5"
    assert one(lines, "mha", "paper: acc")["paper_acc"] == "0.56 ± 0.001581"


def test_what_the_sweep_still_lacks():
    """`gpu_paper.sh next` asks these: a cell lacks runs until `seeds` finished full runs of it exist (a failed run,
    a probe, a run of the other activation do not count); a cell lacks a probe until a run alone measured it."""
    probe = rec("mha", 0, 0.27, runs=1, epochs=0, steps=3000)
    recs = [*seeds("mha", 0.4, runs=5)[:4], rec("mha", 9, None, status="error"), probe, *seeds("rmha", 0.58, runs=5),
            *seeds("rcmha", 0.59, act="relu2", runs=5)]
    wanted = [("mha", "relu"), ("rmha", "relu"), ("rcmha", "relu")]
    assert paper.unfinished(recs, wanted, 5) == [("mha", "relu"), ("rcmha", "relu")]
    assert paper.unfinished(recs, wanted, 4) == [("rcmha", "relu")]
    assert paper.unprobed(recs, wanted) == [("rmha", "relu"), ("rcmha", "relu")]


def test_the_readme_paper_table_is_what_the_committed_records_say():
    """README's paper table (issue 19: `attnbench report results/h200/paper` regenerates it) against the records under
    results/h200/paper: every figure of a row (paper_acc mean ± sd at relu and relu2, test acc and bpc means, five
    runs a cell) is the report's, rounded as printed; a record added, replaced or a README edited by hand fails here."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    table = text[text.index("**The paper's table and ablation"):text.index("\nClaims (Welch")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| attention")]
    recs, problems = results_read([root / "results/h200/paper"])
    assert not problems
    ok, failed = paper.cells([r for r in paper.paper_records(recs) if not paper.is_probe(r)])
    assert not failed and sorted(row[0] for row in rows) == sorted(paper.paper_attentions())
    for attn, acc_relu, acc_relu2, paper_fig, test_acc, test_bpc, _wall in rows:
        assert float(paper_fig) == paper.paper_figure(attn)
        for act, acc, t_acc, t_bpc in zip(("relu", "relu2"), (acc_relu, acc_relu2), test_acc.split(" / "),
                                          test_bpc.split(" / ")):
            runs = ok[(attn, act)]
            assert len(runs) == 5, (attn, act)
            acc_s = stats.summary(paper.values(runs, "paper_acc"))
            assert acc == f"{acc_s['mean']:.4f} ± {acc_s['std']:.4f}", (attn, act)
            assert t_acc == f"{stats.summary(paper.values(runs, 'test_acc'))['mean']:.4f}", (attn, act)
            assert t_bpc == f"{stats.summary(paper.values(runs, 'test_bpc'))['mean']:.3f}", (attn, act)
