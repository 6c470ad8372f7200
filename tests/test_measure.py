"""measure/: timing, memory, NVML, FLOPs on CPU with tiny shapes."""

from __future__ import annotations

import statistics
import sys
import time

import pytest
import torch

from attnbench.measure import flops, memory, nvml, timing

FAST = timing.TimingPolicy(min_samples=5, block=5, min_time_s=0.0, max_time_s=0.2, warmup_cap_s=0.05,
                           min_warmup_s=0.0)


def test_summarize_matches_statistics():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    s = timing.summarize(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    assert s["median_ms"] == statistics.median(xs)
    assert (s["p25_ms"], s["p75_ms"]) == pytest.approx((q[0], q[2]))
    assert s["min_ms"] == 1.0 and s["max_ms"] == 10.0 and s["mean_ms"] == pytest.approx(25 / 6)
    assert s["iqr_rel"] == pytest.approx((q[2] - q[0]) / 3.5)


def test_benchmark_keeps_every_sample_and_measures_sleep():
    import time

    calls = []
    t = timing.benchmark(lambda: (calls.append(1), time.sleep(0.002)), policy=FAST)
    assert t.timer == "perf_counter" and not t.flush_l2
    assert len(t.samples_ms) == t.summary["n"] >= FAST.min_samples
    assert len(calls) == t.warmup_calls + len(t.samples_ms)
    assert t.median_ms >= 2.0  # slept 2 ms
    assert t.summary["min_ms"] <= t.median_ms <= t.summary["max_ms"]


@pytest.mark.parametrize("mode", timing.MODES)
def test_modes_reset_grads_and_run_backward(mode):
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    leaves = [x, *lin.parameters()]
    setup, call = timing.make_call(lambda: lin(x), leaves, mode, list(lin.parameters()))
    w0 = lin.weight.detach().clone()
    grads = []
    for _ in range(2):
        setup()
        assert all(t.grad is None for t in leaves)
        call()
        grads.append(None if lin.weight.grad is None else lin.weight.grad.clone())
    if mode == "fwd":
        assert x.grad is None and grads == [None, None]
    else:
        # gradients were reset before the second call, so they are one call's worth, not two
        assert x.grad is not None and torch.allclose(grads[0], grads[1])
    assert (not torch.equal(w0, lin.weight.detach())) == (mode == "step")


def test_bwd_mode_gradient_is_one_call_not_accumulated():
    x = torch.ones(3, requires_grad=True)
    setup, call = timing.make_call(lambda: 2 * x, [x], "bwd")
    seen = []
    for _ in range(3):
        setup()
        call()
        seen.append(x.grad.clone())
    assert torch.equal(seen[0], seen[2]) and seen[0].abs().sum() > 0  # same retained graph, no accumulation


def test_l2_flush_is_cuda_only():
    assert timing.l2_flusher("cpu") is None


def test_flop_convention():
    f = flops.core_flops(4, 16, 1024, 64, "fwd")
    assert f == 4 * 4 * 16 * 1024**2 * 64 / 2
    assert flops.core_flops(4, 16, 1024, 64, "bwd") == 2.5 * f
    assert flops.core_flops(4, 16, 1024, 64, "fwd+bwd") == 3.5 * f
    assert flops.core_flops(4, 16, 1024, 64, "fwd", causal=False) == 2 * f
    assert "4*B*n*T^2*d/2" in flops.CONVENTION


def test_linear_flops_count_modules_and_direct_linear_calls():
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(2, 5, 8)
    assert flops.linear_flops_fwd(m, lambda: m(x)) == 2 * 10 * 8 * 16 + 2 * 10 * 16 * 4
    w = torch.randn(24, 8)  # a fused Q|K|V weight used through F.linear, as the fast attentions do
    assert flops.linear_flops_fwd(None, lambda: torch.nn.functional.linear(x, w)) == 2 * 10 * 8 * 24


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_linear_flops_of_mha_are_its_four_projections(impl):
    from attnbench.attention import build

    mod = build("mha", d_model=32, n_heads=4, impl=impl)
    x = torch.randn(2, 7, 32)
    assert flops.linear_flops_fwd(mod, lambda: mod(x)) == 4 * 2 * 14 * 32 * 32


def test_matmul_ceiling_positive():
    c = flops.matmul_ceiling("cpu", torch.float32, size=64, policy=FAST)
    assert c["ceiling_tflops"] > 0 and c["ceiling_dtype"] == "float32"


def test_nvml_without_driver_says_na(monkeypatch):
    import pynvml

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    with nvml.NvmlSampler(0) as s:
        pass
    r = s.result()
    assert not s.available
    assert r["nvml_peak_mib"] is None and r["nvml_avg_mib"] is None
    assert r["nvml_note"].startswith("NVML n/a") and "device-wide" in r["nvml_scope"]


def test_nvml_sampler_peak_and_average(monkeypatch):
    import pynvml

    used = iter([100, 300, 200] + [200] * 10_000)

    class Info:
        def __init__(self):
            self.used = next(used) * 2**20

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByPciBusId", lambda b: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: Info())
    with nvml.NvmlSampler(0, interval_s=0.001) as s:
        import time

        time.sleep(0.01)
    r = s.result()
    assert r["nvml_peak_mib"] == 300 and 100 < r["nvml_avg_mib"] < 300 and r["nvml_samples"] >= 3


@pytest.mark.parametrize("listed, shared", [([], False), (["us"], False), (["us", "another"], True)])
def test_nvml_figures_of_a_shared_device_read_na(monkeypatch, listed, shared):
    """Device-wide used memory counts every process: with another one on the device (concurrent runs, MPS) the
    figures are not this run's and read n/a, saying why; a driver that lists none (no permission) keeps them."""
    import pynvml

    class Info:
        used = 500 * 2**20

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByPciBusId", lambda b: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: Info())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: listed)
    with nvml.NvmlSampler(0, interval_s=0.001) as s:
        pass
    r = s.result()
    if shared:
        assert r["nvml_peak_mib"] is None and r["nvml_note"].startswith("n/a: 2 processes on the device")
    else:
        assert r["nvml_peak_mib"] == 500 and r["nvml_note"] is None


def estimate(name, seq_len, impl="fast", batch=2, dtype_bytes=4, **cfg):
    from attnbench.attention import get
    from attnbench.config import AttnConfig

    cfg = AttnConfig(**{"d_model": 64, "n_heads": 4, "impl": impl, **cfg})
    return memory.estimate_fields(get(name).activation_estimate(cfg, batch, seq_len, dtype_bytes))["estimate_mib"]


def test_activation_estimate_scales():
    fast1, fast2 = estimate("mha", 128), estimate("mha", 256)
    assert fast2 == pytest.approx(2 * fast1)  # fused kernel: linear in T
    ref1 = estimate("mha", 128, "reference")
    assert ref1 - fast1 == pytest.approx((2 * 4 * 128 * 128 * 4 - 4 * 2 * 4 * 128) / 2**20)  # + probs - lse
    assert estimate("mqa", 128) < estimate("gqa", 128, kv_heads=2) < fast1
    assert estimate("sha", 128) < fast1 < estimate("mhe-add", 128) < estimate("mdha", 128)


def test_estimate_of_an_attention_without_one_is_na():
    assert memory.estimate_fields(None)["estimate_mib"] is None
    assert memory.estimate_fields({"a": 2**20, "b": 2**21}) == {"estimate_mib": 3.0, "estimate_formula": "a + b"}


def test_cpu_peak_rss_fresh_process_grows_with_size():
    base = {"name": "sdpa", "impl": "fast", "batch": 1, "d_model": 64, "heads": 4, "kv_heads": None,
            "dtype": "float32", "backward": True}
    small = memory.cpu_peak_rss({**base, "seq_len": 16})
    assert small["status"] == "ok", small
    assert small["cpu_peak_rss_mib"] >= small["cpu_rss_before_mib"] > 10  # a python with torch
    assert small["inputs_mib"] == pytest.approx(3 * 4 * 16 * 16 * 4 / 2**20)
    # q, k, v of 8 MiB each: the call allocates the output and three gradients of 8 MiB each
    big = memory.cpu_peak_rss({**base, "d_model": 4096, "seq_len": 512})
    assert big["status"] == "ok", big
    assert big["inputs_mib"] == pytest.approx(24)
    assert big["cpu_peak_rss_delta_mib"] > 16 > small["cpu_peak_rss_delta_mib"]


def test_cpu_peak_rss_reports_failure_as_result():
    bad = {"name": "no-such", "impl": "fast", "batch": 1, "seq_len": 8, "d_model": 64, "heads": 4,
           "kv_heads": None, "dtype": "float32"}
    r = memory.cpu_peak_rss(bad)
    assert r["status"] == "n/a" and "unknown attention" in r["reason"]


def test_warmup_and_timed_calls_last_their_minimum_times():
    """Run-to-run spread: warm-up runs at least min_warmup_s (clocks ramp up) and timing at least min_time_s."""
    starts = []
    policy = timing.TimingPolicy(min_samples=5, block=5, min_warmup_s=0.15, warmup_cap_s=1.0, min_time_s=0.1,
                                 max_time_s=1.0, rel_tol=1.0)
    t = timing.benchmark(lambda: (starts.append(time.perf_counter()), time.sleep(0.002)), policy=policy)
    assert len(starts) == t.warmup_calls + len(t.samples_ms)
    # call 0 is the first call; warm-up is calls 1 .. warmup_calls - 1; then the timed calls
    # the warm-up clock starts just before call 1 (a preempted process may lose a few ms there): 10 ms of slack;
    # without min_warmup_s it would be 3 calls, about 6 ms
    assert starts[t.warmup_calls] - starts[1] >= 0.14
    assert sum(t.samples_ms) >= 100.0

def test_activation_estimate_of_the_fast_relative_path_counts_the_augmented_width():
    """The fast rmha/rcmha path keeps q and k widened by d_R for its fused kernel: d_R moves the estimate by exactly
    two B·T·n·Δd tensors; and the estimate is within 5 % of the committed H100 measurement at T=16384 (commit
    537ffce: the prologue keeps q_aug, not q, so RCMHA frees its convolved q and k)."""
    from pathlib import Path

    from attnbench.results import read

    kw = dict(batch=4, seq_len=16384, d_model=1024, n_heads=16, dtype_bytes=2)
    base = estimate("rmha", **kw)
    wide = estimate("rmha", d_pos=128, **kw)
    assert wide - base == pytest.approx(2 * 4 * 16384 * 16 * 64 * 2 / 2**20)
    recs, _ = read([Path(__file__).parent.parent / "results" / "h100" / "sweep-537ffce"])
    measured = {r["attn"]: r["metrics"]["activations_mib"] for r in recs
                if r["kind"] == "memory" and r["config"]["seq_len"] == 16384 and r["attn"] in ("rmha", "rcmha")}
    assert set(measured) == {"rmha", "rcmha"}
    for name, mib in measured.items():
        est = estimate(name, **kw)
        assert abs(est - mib) / mib < 0.05, (name, est, mib)
