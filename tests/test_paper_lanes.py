"""scripts/paper_lanes.py, the paper preset's runs as concurrent solo processes over device calls: which runs are
done (a finished record of every step), and the checkpoint folders that travel between calls in pieces."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_lanes", ROOT / "scripts" / "paper_lanes.py")
lanes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lanes)


def rec(attn, act, seed, status="ok", steps=lanes.FULL_STEPS, preset="paper"):
    return {"kind": "train", "attn": attn, "status": status, "metrics": {"steps": steps},
            "config": {"preset": preset, "seed": seed, "preset_fields": {"act": act}}}


def test_a_run_is_done_only_when_its_record_finished_every_step(tmp_path):
    (tmp_path / "a").mkdir()
    rows = [rec("mha", "relu", 0), rec("mha", "relu2", 1), rec("mha", "relu", 2, status="interrupted"),
            rec("rcmha", "relu", 3, steps=97_750), rec("rmha", "relu", 4, preset="default")]
    (tmp_path / "a" / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    assert lanes.finished([str(tmp_path)], lanes.FULL_STEPS) == {("mha", "relu", 0), ("mha", "relu2", 1)}
    assert lanes.finished([str(tmp_path)], 97_750) == {("rcmha", "relu", 3)}  # a trial's own step count


def test_carried_pieces_unpack_into_run_folders_with_their_job(tmp_path):
    runs = tmp_path / "made"
    for name, attn, act, seed in (("train-1", "mha", "relu2", 3), ("train-2", "rcmha", "relu", 0)):
        (runs / name).mkdir(parents=True)
        (runs / name / "plan.json").write_text(json.dumps({"attns": [attn], "cfg": {"act": act, "seed": seed}}))
        (runs / name / f"{attn}-seed{seed}.pt").write_bytes(bytes(range(256)) * 300)
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as t:
        for d in sorted(runs.iterdir()):
            t.add(d, arcname=d.name)
    data, carried = whole.read_bytes(), tmp_path / "ckpt-in"
    carried.mkdir()
    for i in range(0, len(data), 40_000):  # pieces, as the device call brings them back
        (carried / f"ck-lanes.tar.{i // 40_000:02d}").write_bytes(data[i:i + 40_000])
    got = lanes.carried_runs(str(carried), tmp_path / "ck")
    assert [(job, folder.name) for job, folder in got] == [(("mha", "relu2", 3), "train-1"),
                                                            (("rcmha", "relu", 0), "train-2")]
    assert (tmp_path / "ck" / "train-2" / "rcmha-seed0.pt").read_bytes() == bytes(range(256)) * 300
    assert lanes.carried_runs(str(tmp_path / "none"), tmp_path / "ck2") == []
