"""Parameter counts: counted from the built modules and from each attention's closed form, plus the MHE paper's
two identities (Xue & Aletras 2023, abstract; attention.md, MHE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnbench.config import AttnConfig


def counted(module) -> dict[str, int]:
    """Split a module's parameters into Q/K/V (projections and MHE's head embeddings), output, and the rest."""
    parts = {"qkv": 0, "out": 0, "other": 0}
    for name, p in module.named_parameters():
        top = name.split(".")[0]
        part = "qkv" if top in ("q", "k", "v", "emb") else "out" if top == "o" else "other"
        parts[part] += p.numel()
    return parts


@dataclass
class ParamTable:
    config: dict[str, Any]
    layers: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # settings that make an attention another one (GQA.degenerate)


def mhe_identities(n: int, d: int, qkv: dict[str, int]) -> list[dict[str, Any]]:
    """The abstract's identities on the Q/K/V parameters (no biases): MHE − SHA = 3nd; MHA − MHE = (3n²−3n)d² − 3nd."""
    out = []
    if "mhe-add" in qkv and "sha" in qkv:
        lhs, rhs = qkv["mhe-add"] - qkv["sha"], 3 * n * d
        out.append({"identity": "params(MHE) − params(SHA of width d) = 3nd", "counted": lhs, "closed_form": rhs,
                    "holds": lhs == rhs})
    if "mha" in qkv and "mhe-add" in qkv:
        lhs, rhs = qkv["mha"] - qkv["mhe-add"], (3 * n * n - 3 * n) * d * d - 3 * n * d
        out.append({"identity": "params(MHA) − params(MHE) = (3n²−3n)d² − 3nd", "counted": lhs, "closed_form": rhs,
                    "holds": lhs == rhs})
    return out


def param_table(attn: str | None = None, layers: int = 1, **config: Any) -> ParamTable:
    """Counted and closed-form parameters of each attention (all by default) at the given sizes, for `layers`
    layers. Modules are built on the meta device: nothing is allocated, any size can be counted."""
    import torch

    from attnbench.attention import get, names, parse_names
    from attnbench.errors import AttnbenchError

    if layers <= 0:
        raise AttnbenchError(f"layers must be positive, got {layers}")
    config = {k: v for k, v in config.items() if v is not None}
    cfg = AttnConfig.from_kwargs(**config)
    chosen = parse_names(attn)
    table = ParamTable(config=cfg.to_dict(), layers=layers)
    qkv: dict[str, int] = {}
    totals: dict[str, int] = {}
    for name in dict.fromkeys(chosen + ["mha", "sha", "mhe-add"]):  # MHA (ratios) and SHA/MHE (identities)
        with torch.device("meta"):
            module = get(name)(AttnConfig.from_kwargs(**config))
        parts = counted(module)
        closed = get(name).closed_form(cfg)
        qkv[name] = parts["qkv"]
        totals[name] = sum(parts.values()) * layers
        if name in chosen:
            note = getattr(get(name), "degenerate", lambda c: None)(cfg)
            table.notes += [note] if note else []
            table.rows.append({"attn": name, **{k: v * layers for k, v in parts.items()},
                               "total": totals[name], "closed_form": sum(closed.values()) * layers,
                               "matches": parts == closed})
    for row in table.rows:
        row["ratio_to_mha"] = row["total"] / totals["mha"]
    if not cfg.bias:
        table.identities = mhe_identities(cfg.n_heads, cfg.head_dim, qkv)
    return table


def save_records(table: ParamTable, results_dir: str = "results"):
    """One 'params' record per row, in a new JSON Lines file under results_dir; returns its path."""
    from attnbench import results

    path = results.new_run_path("params", results_dir)
    env, command = results.environment("cpu"), results.command_line()
    for row in table.rows:
        metrics = {k: v for k, v in row.items() if k != "attn"}
        results.append(path, results.make_record("params", row["attn"], command,
                                                 {**table.config, "layers": table.layers}, metrics, env,
                                                 identities=table.identities))
    return path
