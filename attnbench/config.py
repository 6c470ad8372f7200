"""The one config every attention is built from; defaults are declared here and nowhere else."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from attnbench.errors import AttnbenchError

IMPLS = ("reference", "fast")
POS_KINDS = ("sinusoid", "learned")


def default_kv_heads(n_heads: int) -> int:
    """GQA's default number of K/V heads g: the divisor of n with 1 < g < n whose group size n/g is nearest 4 by
    ratio (|log(4g/n)| least), 4 being the group size of the former n/4 rule and of Mistral 7B (32 query, 8 K/V
    heads). n = 16 -> 4, 12 -> 3, 8 -> 2, 6 -> 2, 4 -> 2, 18 -> 6; n a multiple of 4 from 8 up gets n/4 exactly,
    and no two divisors tie (a tie needs g1*g2 = n²/16, so 4 | n, where n/4 itself is at distance 0).
    n = 1, 2, 3 or prime has no such divisor: g = 1, and GQA is MQA (GQA.degenerate says so)."""
    proper = [g for g in range(2, n_heads) if n_heads % g == 0]
    return min(proper, key=lambda g: abs(math.log(4 * g / n_heads))) if proper else 1


@dataclass
class AttnConfig:
    """Settings shared by two or more attentions (style.md, habit 2)."""

    d_model: int = 1024
    n_heads: int = 16
    kv_heads: int | None = None  # GQA: number of K/V heads (default: default_kv_heads(n_heads), 1 < g < n)
    dropout: float = 0.0  # on attention probabilities
    bias: bool = False  # Q/K/V/O biases; off so that closed-form counts are exact
    impl: str = "fast"  # "reference" (slow, obvious) or "fast" (fused kernels)
    conv_width: int = 3  # MDHA, RCMHA: causal depth-wise convolution width (Primer)
    pos: str = "sinusoid"  # RMHA, RCMHA: "sinusoid" (Transformer-XL) or "learned" (labml tables)
    d_pos: int | None = None  # RMHA, RCMHA: sinusoid width d_R (default: head width d)
    max_rel: int = 1024  # RMHA, RCMHA with pos="learned": table of 2*max_rel distances

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "conv_width", "max_rel"):
            if getattr(self, name) <= 0:
                raise AttnbenchError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise AttnbenchError(f"heads ({self.n_heads}) must divide d-model ({self.d_model})")
        if self.kv_heads is None:
            self.kv_heads = default_kv_heads(self.n_heads)
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            raise AttnbenchError(f"kv-heads ({self.kv_heads}) must be positive and divide heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise AttnbenchError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.impl not in IMPLS:
            raise AttnbenchError(f"impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.pos not in POS_KINDS:
            raise AttnbenchError(f"pos must be one of {', '.join(POS_KINDS)}, got {self.pos!r}")
        if self.d_pos is None:
            self.d_pos = self.head_dim
        if self.d_pos <= 0 or self.d_pos % 2:
            raise AttnbenchError(f"d-pos (sinusoid width) must be a positive even number, got {self.d_pos}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, **kw: Any) -> "AttnConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise AttnbenchError(f"unknown attention setting(s): {', '.join(unknown)}")
        return cls(**kw)
