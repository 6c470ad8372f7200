"""The speed/memory sweeps and their CLI on CPU with tiny shapes: records, failures as cells, bad input. Every sweep
here says device cpu: on a GPU machine "auto" would measure CUDA in bf16 (issue 14)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from attnbench import bench, cli, results
from attnbench.errors import AttnbenchError
from attnbench.tables import screen

runner = CliRunner()
TINY = ["--device", "cpu", "--batch", "1", "--heads", "2", "--d-model", "16", "--max-time", "0.05"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes run faster on one thread, and a busy CI machine does not make them crawl."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(tmp_path, **kw) -> bench.BenchSettings:
    base = dict(seq_lens=(16, 32), batch=1, heads=2, d_model=16, attn="mha", max_time_s=0.05, device="cpu",
                results_dir=str(tmp_path))
    base.update(kw)
    return bench.BenchSettings(**base)


def test_defaults_declared_once():
    s = bench.BenchSettings()
    assert (s.batch, s.heads, s.d_model, s.mode, s.impl) == (4, 16, 1024, "fwd+bwd", "fast")


@pytest.mark.parametrize("spec,want", [("512,1024", (512, 1024)), (" 64 ", (64,)), ("8,8,4", (8, 4))])
def test_parse_seq_lens(spec, want):
    assert bench.parse_seq_lens(spec) == want


@pytest.mark.parametrize("spec", ["-5", "0", "abc", "1.5", "", "64,,"])
def test_parse_seq_lens_rejects(spec):
    with pytest.raises(AttnbenchError):
        bench.parse_seq_lens(spec)


def test_speed_sweep_records_round_trip(tmp_path):
    res = bench.run("speed", tiny(tmp_path))
    recs, problems = results.read([tmp_path])
    assert problems == []
    assert len(recs) == len(res.records) == 2 * 3  # (mha, sdpa, sdpa+proj) x 2 lengths
    for rec, back in zip(res.records, recs):
        back.pop("_source")
        assert json.loads(json.dumps(rec, default=str)) == back
    by = {(r["config"]["name"], r["config"]["seq_len"]): r for r in recs}
    mha, sdpa = by[("mha", 32)], by[("sdpa", 32)]
    assert mha["attn"] == "mha" and sdpa["attn"] is None and by[("sdpa+proj", 16)]["attn"] is None
    assert all(r["status"] == "ok" and r["kind"] == "speed" for r in recs)
    m = sdpa["metrics"]
    assert len(sdpa["samples_ms"]) == m["samples_n"] >= 10
    assert m["p25_ms"] <= m["median_ms"] <= m["p75_ms"] and m["min_ms"] <= m["mean_ms"]
    assert m["ratio_to_mha"] == pytest.approx(m["median_ms"] / mha["metrics"]["median_ms"])
    assert m["core_flops"] == 3.5 * 4 * 1 * 2 * 32**2 * 8 / 2 and m["module_flops"] == m["core_flops"]
    # mha adds its four D x D projections: 2*T*D*D each forward, x3 for fwd+bwd
    assert mha["metrics"]["module_flops"] == pytest.approx(m["core_flops"] + 3 * 4 * 2 * 32 * 16 * 16)
    assert mha["check"]["ok"] and mha["check"]["max_rel_err"] <= mha["check"]["tol"]
    assert mha["config"]["attn_config"]["impl"] == "fast" and mha["config"]["dtype"] == "float32"
    assert mha["env"]["device"] == "cpu" and mha["env"]["threads"] >= 1
    assert any("4*B*n*T^2*d/2" in n for n in res.notes) and any("ceiling" in n for n in res.notes)


def test_oom_becomes_a_cell_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = bench.measure_speed

    def flaky(w, s, device, seq_len):
        if w.name == "mha" and seq_len == 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(w, s, device, seq_len)

    monkeypatch.setattr(bench, "measure_speed", flaky)
    res = bench.run("speed", tiny(tmp_path))
    recs, _ = results.read([res.path])
    status = {(r["config"]["name"], r["config"]["seq_len"]): r["status"] for r in recs}
    assert status[("mha", 16)] == "oom"
    assert status[("mha", 32)] == status[("sdpa", 16)] == status[("sdpa", 32)] == "ok"
    assert "out of memory" in recs[0]["reason"]
    assert (res.rows[0]["status"], res.rows[0]["median_ms"]) == ("oom", None)
    assert screen(res.rows, res.columns)[0][0]["median ms"] == "OOM"  # on screen, in place of the figures
    sdpa16 = next(r for r in recs if r["config"]["name"] == "sdpa" and r["config"]["seq_len"] == 16)
    assert sdpa16["metrics"]["ratio_to_mha"] is None  # no mha to compare with at that length


def test_unsupported_becomes_na(tmp_path, monkeypatch):
    real = bench.build_workload

    def no_ref(name, impl, *a, **k):
        if impl == "reference":
            raise NotImplementedError("no reference path for this shape")
        return real(name, impl, *a, **k)

    monkeypatch.setattr(bench, "build_workload", no_ref)
    res = bench.run("speed", tiny(tmp_path, seq_lens=(16,), impl="both"))
    by = {(r["config"]["name"], r["config"]["impl"]): r for r in res.records}
    assert by[("mha", "reference")]["status"] == "n/a"
    assert by[("mha", "fast")]["status"] == "ok" and by[("sdpa", "fast")]["status"] == "ok"
    row = next(r for r in res.rows if r["impl"] == "reference")
    assert (row["status"], row["reason"], row["median_ms"]) == ("n/a", "no reference path for this shape", None)
    shown = screen(res.rows, res.columns)[0][res.rows.index(row)]
    assert shown["median ms"] == "n/a: no reference path for this shape"


def test_wrong_fast_path_is_not_timed(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "check_fast", lambda *a: {"ok": False, "max_rel_err": 0.5, "tol": 1e-3,
                                                         "seq_len": 16})
    called = []
    monkeypatch.setattr(bench, "measure_speed", lambda *a: called.append(a))
    res = bench.run("speed", tiny(tmp_path, seq_lens=(16,), baseline=False))
    assert called == [] and res.records[0]["status"] == "error"
    assert "differs from reference" in res.records[0]["reason"]


def test_interrupt_keeps_finished_records(tmp_path, monkeypatch):
    real, calls = bench.measure_speed, []

    def interrupt_second(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(bench, "measure_speed", interrupt_second)
    out = runner.invoke(cli.app, ["speed", "--attn", "mha", "--seq-len", "16", *TINY, "--results-dir", str(tmp_path)])
    assert out.exit_code == 130
    recs, _ = results.read([tmp_path])
    assert [r["config"]["name"] for r in recs] == ["mha"]


def test_memory_sweep_cpu_fresh_process(tmp_path):
    res = bench.run("memory", tiny(tmp_path, seq_lens=(32,), attn="mha", baseline=False))
    (rec,) = results.read([res.path])[0]
    m = rec["metrics"]
    assert rec["status"] == "ok" and rec["kind"] == "memory"
    assert m["cpu_peak_rss_mib"] > 10 and m["cpu_peak_rss_delta_mib"] >= 0
    assert m["weights_mib"] == pytest.approx(4 * 16 * 16 * 4 / 2**20)
    assert m["inputs_mib"] == pytest.approx(32 * 16 * 4 / 2**20) and m["estimate_mib"] > 0
    assert "cpu_peak_rss_mib" in res.columns and res.rows[0]["cpu_peak_rss_mib"] == m["cpu_peak_rss_mib"]


def test_memory_oom_in_worker_is_a_cell(tmp_path, monkeypatch):
    from attnbench.measure import memory

    monkeypatch.setattr(memory, "cpu_peak_rss", lambda spec, timeout_s=600: {"status": "oom", "reason": "killed"})
    res = bench.run("memory", tiny(tmp_path, seq_lens=(16, 32), attn="mha", baseline=False))
    assert [r["status"] for r in res.records] == ["oom", "oom"]
    assert [r["status"] for r in res.rows] == ["oom", "oom"]
    assert [r["inputs MiB"] for r in screen(res.rows, res.columns)[0]] == ["OOM", "OOM"]


def test_cli_speed_json(tmp_path):
    out = runner.invoke(cli.app, ["profile-speed", "--attn", "mha", "--seq-len", "16", *TINY, "--mode", "fwd",
                                  "--format", "json", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["attn"] for r in rows] == ["mha", "sdpa", "sdpa+proj"]
    for r in rows:  # machine keys, numbers as numbers: the IQR as two of them
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in r), r
        assert all(isinstance(r[k], float) for k in ("median_ms", "p25_ms", "p75_ms", "tokens_per_s", "ratio_to_mha"))
        assert r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] and r["seq_len"] == 16 and r["status"] == "ok"
    assert len(list(tmp_path.glob("speed-*.jsonl"))) == 1


BAD = [
    (["--seq-len", "-5"], "must be positive"),
    (["--seq-len", "abc"], "positive integers"),
    (["--seq-len", "512,x"], "positive integers"),
    (["--dtype", "fp8"], "unknown dtype"),
    (["--device", "tpu"], "unknown device"),
    (["--attn", "nope"], "unknown attention"),
    (["--mode", "sideways"], "unknown mode"),
    (["--impl", "quick"], "unknown impl"),
    (["--format", "xml"], "unknown format"),
    (["--batch", "0"], "batch must be positive"),
    (["--heads", "3"], "must divide"),
    (["--threads", "0"], "--threads must be positive"),
]


@pytest.mark.parametrize("cmd", ["speed", "profile-memory"])
@pytest.mark.parametrize("args,msg", BAD)
def test_cli_bad_input_one_line(cmd, args, msg, tmp_path):
    out = runner.invoke(cli.app, [cmd, *args, "--results-dir", str(tmp_path)])
    assert out.exit_code != 0
    text = out.output.strip()
    assert msg in text and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_device_cuda_without_gpu(tmp_path):
    out = runner.invoke(cli.app, ["memory", "--device", "cuda", "--results-dir", str(tmp_path)])
    assert out.exit_code == 2
    assert "no CUDA GPU" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("args,msg", [
    (["--cuda-graph", "--device", "cpu"], "needs a CUDA GPU"),
    (["--cuda-graph", "--mode", "step"], "not capturable"),
    (["--cuda-graph", "--compile"], "choose one"),
])
def test_cli_cuda_graph_misuse_one_line(args, msg, tmp_path):
    out = runner.invoke(cli.app, ["speed", *args, "--attn", "mha", "--seq-len", "16", "--results-dir", str(tmp_path)])
    assert out.exit_code == 2
    text = out.output.strip()
    assert msg in text and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- progress, threads
def test_sweep_reports_progress_cell_by_cell(tmp_path):
    events = []
    res = bench.run("speed", tiny(tmp_path), on=lambda ev, **d: events.append((ev, d)))
    events = [e for e in events if e[0] != "warning"]  # a busy machine's warning (load average above the cores)
    # the causality check of each attention at each length, after the ceiling and before any cell (causality.py)
    assert events[2:4] == [("check", {"what": f"causality mha (fast) T={t}"}) for t in (16, 32)]
    events = [e for e in events if e[0] != "check"]
    assert events[0] == ("start", {"kind": "speed", "total": 6, "device": "cpu"})
    measured = [d for ev, d in events if ev == "measure"]
    done = [d for ev, d in events if ev == "done"]
    assert measured[0]["what"] == "matmul ceiling"
    assert [d["what"] for d in measured[1:]] == [f"{n} (fast) T={t}" for t in (16, 32) for n in ("mha", "sdpa",
                                                                                                 "sdpa+proj")]
    assert [d["done"] for d in measured[1:]] == list(range(6)) and [d["done"] for d in done] == list(range(1, 7))
    assert [d["record"] for d in done] == res.records and all(d["total"] == 6 for d in measured + done)


def _record(kind="speed", status="ok", **metrics):
    return {"kind": kind, "status": status, "config": {"name": "mha", "impl": "fast", "seq_len": 16},
            "metrics": metrics}


def _feed(progress):
    with progress as p:
        p.on("start", kind="speed", total=2, device="cpu")
        p.on("measure", what="mha (fast) T=16", done=0, total=2)
        p.on("done", record=_record(median_ms=0.5), done=1, total=2)
        p.on("warning", text="the machine looks busy")
        p.on("done", record=_record(status="oom"), done=2, total=2)


def test_progress_bar_on_a_terminal_and_nothing_but_warnings_elsewhere():
    import io
    import re

    from rich.console import Console

    from attnbench.tables import SweepProgress

    tty, pipe = io.StringIO(), io.StringIO()
    _feed(SweepProgress(Console(file=tty, force_terminal=True, width=120)))
    _feed(SweepProgress(Console(file=pipe, force_terminal=False, width=120)))
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.getvalue())
    assert "mha (fast) T=16" in shown and "2/2" in shown and "T=16: OOM" in shown and "0.5 ms" in shown
    assert pipe.getvalue() == "warning: the machine looks busy\n"


def test_cli_sweep_piped_prints_no_bar(tmp_path):
    out = runner.invoke(cli.app, ["speed", "--attn", "mha", "--seq-len", "16", *TINY, "--no-baseline",
                                  "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "━" not in out.stderr and "0/1" not in out.stderr


def test_threads_apply_to_the_sweep_and_are_recorded(tmp_path):
    before = torch.get_num_threads()
    res = bench.run("speed", tiny(tmp_path, seq_lens=(16,), baseline=False, threads=2))
    (rec,) = res.records
    assert rec["config"]["threads"] == 2 and rec["env"]["threads"] == 2
    assert torch.get_num_threads() == before  # restored after the sweep
    assert rec["timing"]["load_avg_1m"] is None or rec["timing"]["load_avg_1m"] >= 0
    res = bench.run("speed", tiny(tmp_path, seq_lens=(16,), baseline=False))
    assert "threads" not in res.records[0]["config"]  # not given: settings groups of older records stay the same


def test_memory_worker_runs_with_the_threads_asked(tmp_path):
    res = bench.run("memory", tiny(tmp_path, seq_lens=(16,), baseline=False, threads=2))
    (rec,) = res.records
    assert rec["status"] == "ok" and rec["metrics"]["cpu_threads"] == 2 and rec["config"]["threads"] == 2


def test_threads_on_a_gpu_is_refused(tmp_path, monkeypatch):
    import attnbench.device

    monkeypatch.setattr(attnbench.device, "select", lambda spec: "cuda")
    with pytest.raises(AttnbenchError, match="--threads sets the threads of CPU measurements"):
        bench.run("speed", tiny(tmp_path, threads=1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("load,cores,threads,warned", [(None, 2, None, False), (2.0, 2, None, False),
                                                       (9.7, 2, None, True), (9.7, 2, 1, True), (3.0, 16, None, False)])
def test_busy_warning_when_load_exceeds_the_cores(load, cores, threads, warned):
    text = bench.busy_warning(load, cores, threads)
    assert (text is not None) == warned
    if warned:
        assert f"load average {load:.1f} on {cores} cores" in text and "\n" not in text
        assert ("--threads 1" in text) == (threads != 1)


def test_cli_speed_on_a_busy_machine_warns_once_before_timing(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "load_average", lambda: 99.0)
    monkeypatch.setattr(bench, "cores", lambda: 2)
    out = runner.invoke(cli.app, ["speed", "--attn", "mha", "--seq-len", "16", *TINY, "--no-baseline",
                                  "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    warned = [line for line in out.stderr.splitlines() if "looks busy" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: the machine looks busy (load average 99.0 on 2 cores)")


# ---------------------------------------------------------------------------------------------- CPU out of memory
def _cpu_allocation_error() -> RuntimeError:
    """The error torch's CPU allocator raises when memory runs out, for real: a 1 TiB tensor under an address-space
    limit (fails alike under every overcommit setting, and touches nothing)."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    cap = size_kib * 1024 + 2**30
    if hard != resource.RLIM_INFINITY and cap > hard:
        pytest.skip("address-space limit already lower than needed")
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        torch.empty(2**40, dtype=torch.uint8)
    except RuntimeError as e:
        return e
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    pytest.fail("a 1 TiB tensor was allocated under a limit 1 GiB above this process's size")


def test_cpu_out_of_memory_is_oom():
    from attnbench.errors import classify

    e = _cpu_allocation_error()
    assert "can't allocate memory" in str(e)
    status, reason = classify(e)
    assert status == "oom" and "DefaultCPUAllocator" in reason


def test_cpu_out_of_memory_in_the_sweep_is_an_oom_cell(tmp_path, monkeypatch):
    err = _cpu_allocation_error()

    def out_of_memory(w, s, device, seq_len):
        raise err

    monkeypatch.setattr(bench, "measure_speed", out_of_memory)
    out = runner.invoke(cli.app, ["speed", "--attn", "mha", "--seq-len", "16", *TINY, "--no-baseline", "--format",
                                  "json", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert [(r["status"], r["median_ms"]) for r in json.loads(out.stdout)] == [("oom", None)]
    (rec,) = results.read([tmp_path])[0]
    assert rec["status"] == "oom" and "can't allocate memory" in rec["reason"]


def test_cpu_out_of_memory_in_the_memory_worker_is_oom(monkeypatch, capsys):
    from attnbench.measure import memory

    err = _cpu_allocation_error()

    def worker(spec):
        raise err

    monkeypatch.setattr(memory, "_worker", worker)
    assert memory.main(["memory", json.dumps({"name": "mha"})]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["status"] == "oom" and "can't allocate memory" in res["reason"]


# ---------------------------------------------------------------------------------------------- the SDPA baselines
@pytest.mark.parametrize("spec,baseline,want", [
    ("mha,rcmha", True, ["mha", "sdpa", "sdpa+proj", "rcmha"]),  # added after mha by default
    ("rcmha", True, ["sdpa", "sdpa+proj", "rcmha"]),
    ("mha,rcmha", False, ["mha", "rcmha"]),
    ("sdpa", True, ["sdpa"]),  # named: those named, where named, and no other
    ("sdpa+proj,mha", True, ["sdpa+proj", "mha"]),
    ("mha, sdpa ,sdpa", False, ["mha", "sdpa"]),  # --no-baseline adds none; a named one is still measured
])
def test_the_baselines_are_selectable_with_attn(spec, baseline, want):
    assert bench.sweep_names(spec, baseline) == want


def test_speed_and_memory_measure_a_baseline_alone(tmp_path):
    for cmd, tiny_args in (("speed", TINY), ("memory", TINY[:-2])):  # memory takes no --max-time
        out = runner.invoke(cli.app, [cmd, "--attn", "sdpa+proj", "--seq-len", "16", *tiny_args, "--format", "json",
                                      "--results-dir", str(tmp_path / cmd)])
        assert out.exit_code == 0, out.output
        assert [(r["attn"], r["status"]) for r in json.loads(out.stdout)] == [("sdpa+proj", "ok")]
        (rec,) = results.read([tmp_path / cmd])[0]
        assert rec["attn"] is None and rec["config"]["name"] == "sdpa+proj"


@pytest.mark.parametrize("cmd", [["params"], ["train", "--preset", "tiny"], ["list"]])
def test_a_baseline_is_not_an_attention_elsewhere(cmd, tmp_path):
    out = runner.invoke(cli.app, [*cmd, "--attn", "mha,sdpa"], env={"ATTNBENCH_DATA": str(tmp_path / "none.txt")})
    assert out.exit_code == 2
    assert out.output.strip() == \
        "error: sdpa is a speed/memory baseline, not an attention (attnbench speed --attn sdpa)"


def test_list_and_help_name_the_baselines():
    listed = runner.invoke(cli.app, ["list", "--format", "markdown"])
    assert listed.exit_code == 0 and "(--attn sdpa), not an attention" in listed.output
    assert "(--attn sdpa+proj), not an attention" in listed.output
    helped = runner.invoke(cli.app, ["speed", "--help"], env={"COLUMNS": "200"})
    assert "also the baselines sdpa and sdpa+proj" in helped.output
