"""`attnbench env` on a machine without NVIDIA: it runs, says so, and still reports torch and SDPA."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.envinfo import NO_DRIVER, env_info, env_rows, nvml_info, sdpa_backends
from attnbench.results import environment

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


@no_gpu
def test_env_cli_says_no_nvidia_driver():
    res = CliRunner().invoke(app, ["env", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert NO_DRIVER in res.output and torch.__version__ in res.output
    assert "sdpa.math (cpu)" in res.output


@no_gpu
def test_env_json_holds_the_record_environment():
    res = CliRunner().invoke(app, ["env", "--format", "json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert set(environment()) - {"time_utc"} <= set(info["environment"])  # the same fields as every record
    assert info["gpus"] == [] and info["nvml"].startswith(NO_DRIVER) and info["cuda_available"] is False
    assert info["environment"]["threads"] == torch.get_num_threads()


def test_sdpa_math_backend_always_runs():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    got = sdpa_backends(device)
    assert got["math"] == "yes" and set(got) == {"flash_attention", "efficient_attention", "cudnn_attention", "math"}


def test_rows_cover_every_gpu_field():
    info = env_info()
    names = [r["name"] for r in env_rows(info)]
    assert "nvml" in names and "device_name" in names
    gpus, err = nvml_info()
    assert err is None or gpus == []
    for g in gpus:  # on a GPU machine: memory, clocks and temperature per device
        for k in ("memory_total_mib", "sm_clock_mhz", "temperature_c"):
            assert f"gpu{g['index']}.{k}" in names
