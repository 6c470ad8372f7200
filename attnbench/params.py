"""Parameter counts: counted from the built modules and from each attention's closed form, plus the MHE paper's
two identities (Xue & Aletras 2023, abstract; attention.md, MHE). The split into Q/K/V, output and the rest follows
each attention's `param_parts`; an attention that declares none gets its total only (docs/contract.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnbench.config import RESULTS_DIR, AttnConfig


PARTS = ("qkv", "out", "other")


def counted(module, param_parts: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """A module's parameters split into Q/K/V, output and the rest: a parameter belongs to the part of
    `param_parts` (default: the module class's own) that names it or a module above it, else to "other"."""
    param_parts = param_parts if param_parts is not None else type(module).param_parts
    owner = {prefix: part for part, prefixes in param_parts.items() for prefix in prefixes}
    parts = dict.fromkeys(PARTS, 0)
    for name, p in module.named_parameters():
        pieces = name.split(".")
        prefixes = (".".join(pieces[:i]) for i in range(len(pieces), 0, -1))
        parts[next((owner[x] for x in prefixes if x in owner), "other")] += p.numel()
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
    layers. Figures an attention does not declare (param_parts, closed_form) read "n/a"."""
    from attnbench.attention import get, parse_names
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
        cls = get(name)
        module = _build_for_counting(cls, config)
        total = sum(p.numel() for p in module.parameters())
        totals[name] = total * layers
        if name not in chosen:
            qkv[name] = counted(module)["qkv"]
            continue
        note = getattr(cls, "degenerate", lambda c: None)(cfg)
        table.notes += [note] if note else []
        row: dict[str, Any] = {"attn": name, **dict.fromkeys(PARTS, "n/a"), "total": totals[name],
                               "closed_form": "n/a", "matches": "n/a"}
        parts = counted(module) if hasattr(cls, "param_parts") else None
        if parts is not None:
            qkv[name] = parts["qkv"]
            row.update({k: v * layers for k, v in parts.items()})
        if hasattr(cls, "closed_form"):
            closed = cls.closed_form(cfg)
            row["closed_form"] = sum(closed.values()) * layers
            # part by part where the split is declared, else the totals
            row["matches"] = parts == closed if parts is not None else sum(closed.values()) == total
        table.rows.append(row)
    for row in table.rows:
        row["ratio_to_mha"] = row["total"] / totals["mha"]
    if not cfg.bias:
        table.identities = mhe_identities(cfg.n_heads, cfg.head_dim, qkv)
    return table


def check_causality(table: ParamTable) -> list:
    """Each row's attention through the causality check (causality.py), as the default preset trains it (its
    AttnConfig, at its context ctx, on the CPU in float32): params measures no sequence, so the length is the
    default run's. Sets each row's "causality" (ok | refused: ... | the check's failure); returns the verdicts."""
    from attnbench import causality
    from attnbench.config import PRESETS

    c = PRESETS["default"]
    verdicts = []
    for row in table.rows:
        v = causality.check(row["attn"], c.attn_config(), c.ctx, c.mem_len)
        row["causality"] = "ok" if v.ok else (f"refused: {v.problem()}" if v.leak else
                                              f"{v.failed[0]}: {v.failed[1]}")
        verdicts.append(v)
    return verdicts


def _build_for_counting(cls, config: dict[str, Any]):
    """The module on the meta device (nothing allocated, any size can be counted); on the CPU for a class from
    outside that cannot be built there."""
    import torch

    from attnbench.errors import AttnbenchError

    try:
        with torch.device("meta"):
            return cls(AttnConfig.from_kwargs(**config))
    except RuntimeError as e:
        if "overflow" in str(e):  # a weight of more than 2^63 bytes: not even the meta device describes it
            raise AttnbenchError(f"d-model {config.get('d_model')}: too large to build {cls.__name__} (a weight "
                                 f"would exceed 2^63 bytes)") from None
    except Exception:
        pass
    return cls(AttnConfig.from_kwargs(**config))


def save_records(table: ParamTable, results_dir: str = RESULTS_DIR):
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
