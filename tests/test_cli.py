"""The real CLI: each foundation command, and bad input giving one clear line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from attnbench import cli
from attnbench.attention import names
from attnbench.config import AttnConfig

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, list(args))


def test_help_lists_commands_and_is_fast():
    out = subprocess.run([sys.executable, "-m", "attnbench", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("train", "profile-memory", "memory", "profile-speed", "speed", "param-count", "params", "list"):
        assert cmd in out.stdout
    # no torch at import time of the CLI module
    probe = subprocess.run([sys.executable, "-c", "import sys, attnbench.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"  # what makes --help fast; its wall time is not asserted (busy machines)


def test_cli_defaults_come_from_the_dataclasses():
    import typer.main

    cmd = typer.main.get_command(cli.app).commands["params"]
    defaults = {p.name: p.default for p in cmd.params}
    assert (defaults["d_model"], defaults["heads"]) == (AttnConfig().d_model, AttnConfig().n_heads)


def test_list_names_every_attention():
    r = invoke("list", "--format", "csv")
    assert r.exit_code == 0
    rows = r.stdout.strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == names()


@pytest.mark.parametrize("cmd", ["params", "param-count"])
def test_params_json(cmd):
    r = invoke(cmd, "--heads", "16", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [row["attn"] for row in data["rows"]] == names()
    assert all(row["matches"] for row in data["rows"])
    assert [i["holds"] for i in data["identities"]] == [True, True]


def test_params_table_says_holds():
    r = invoke("params", "--attn", "mha,mhe-add", "--d-model", "768", "--heads", "12", "--layers", "2")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("holds") == 2 and "mhe-add" in r.stdout


def test_params_markdown():
    r = invoke("params", "--format", "markdown", "--attn", "gqa", "--kv-heads", "2", "--heads", "8")
    assert r.exit_code == 0 and "| gqa" in r.stdout


BAD = [
    (["params", "--attn", "nope"], "unknown attention 'nope'", 2),
    (["params", "--heads", "7"], "must divide", 2),
    (["params", "--d-model", "0"], "must be positive", 2),
    (["params", "--heads", "-4"], "must be positive", 2),
    (["params", "--layers", "0"], "layers must be positive", 2),
    (["params", "--kv-heads", "3"], "kv-heads", 2),
    (["params", "--format", "xml"], "unknown format", 2),
]


@pytest.mark.parametrize("args,msg,code", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_one_line_no_traceback(args, msg, code):
    out = subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == code
    assert msg in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_params_save_writes_records(tmp_path):
    from attnbench.results import read

    r = invoke("params", "--attn", "mha,sha,mhe-add", "--d-model", "768", "--heads", "12", "--save",
               "--results-dir", str(tmp_path), "--format", "json")
    assert r.exit_code == 0, r.output
    records, problems = read([tmp_path])
    assert not problems and [x["attn"] for x in records] == ["mha", "sha", "mhe-add"]
    qkv = {x["attn"]: x["metrics"]["qkv"] for x in records}
    assert qkv == {"mha": 1_769_472, "sha": 147_456, "mhe-add": 149_760}
    assert all(x["kind"] == "params" and x["config"]["d_model"] == 768 for x in records)


def test_version_prints_the_version_and_exits_0():
    from attnbench import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout == f"attnbench {__version__}\n"
    out = subprocess.run([sys.executable, "-m", "attnbench", "--version", "list"], capture_output=True, text=True,
                         timeout=60)  # eager: before any command
    assert out.returncode == 0 and out.stdout == f"attnbench {__version__}\n"
