"""The report's "Devices and environments" section: one row per device and environment group (record_groups.env_key),
the groups that no table, plot or ratio below ever mixes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from attnbench.record_groups import env_key
from attnbench.report.document import _Doc


def _env_section(doc: _Doc, records) -> None:
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[env_key(r)].append(r)
    rows = []
    for key, rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        envs = [r.get("env") or {} for r in rs]

        def vals(name: str, short: bool = False) -> str | None:
            v = sorted({re.sub(r"^([0-9a-f]{10})[0-9a-f]+", r"\1", str(e.get(name))) if short else str(e.get(name))
                        for e in envs if e.get(name) is not None})
            return ", ".join(v) if v else None

        rows.append({"device": key[0], "type": key[1], "driver": key[2], "CUDA": key[3], "torch": key[4],
                     "records": len(rs), "kinds": ", ".join(sorted({r["kind"] for r in rs})),
                     "attnbench": vals("attnbench"), "commit": vals("git_commit", short=True),
                     "threads": vals("threads"),
                     "TF32 matmul": vals("tf32_matmul"), "SDPA flash": vals("sdpa_flash"),
                     "SDPA mem-efficient": vals("sdpa_mem_efficient"), "SDPA math": vals("sdpa_math")})
    doc.add("## Devices and environments", "Each section below names the one device and environment its records "
            "come from; records of different rows here are never mixed in one plot or ratio.")
    doc.table(rows, list(rows[0].keys()) if rows else [])
