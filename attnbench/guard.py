"""The size guard: before a measurement cell or a training run starts, its peak memory is estimated and compared with
the memory free on its device (the host's for the CPU); what cannot fit is refused in one line, before anything
runs, and `--force` runs it anyway. For speed cells, also a lower bound on their time from their FLOPs and the
measured matmul ceiling, so that a cell sure to pass its time limit is not started.

The estimates are built from what each attention declares about itself (`activation_estimate`, `closed_form`,
`core_heads`; docs/contract.md) and err high on purpose: they must refuse what would run out of memory or hang a
machine for minutes (issue 21: `speed --seq-len 10000000` grew to 10 GB and ran for minutes), never a size that fits.
They are as good as the attention's own estimate (rmha / rcmha fast on CPU keep more than theirs: docs/usage.md).
A cell of an attention that declares no estimate is not guarded; a training run is guarded by the rest of the model.

    cell_bytes(name, impl, s, seq_len, dtype_bytes)     a speed/memory cell's peak, bytes by part (None: unknown)
    cell_min_seconds(name, s, seq_len, ceiling_tflops)  a lower bound on a speed cell's time (None: unknown)
    train_bytes(cfg, attn, vocab, world, per_device, runs)   a training run's peak on one device, bytes by part
    too_big(parts, free)                                the estimate exceeds the free memory (host.free_memory)
    refusal(what, parts, free, where, hint, more)       the one line that refuses it
"""

from __future__ import annotations

from attnbench.config import AttnConfig, BenchSettings, TrainConfig

GIB = 2**30
# speed: the fewest calls a cell makes (the first, one warm-up call, one block of five timed calls; timing.py)
MIN_CALLS = 7
CEILING_MARGIN = 2.0  # a lower bound on time assumes twice the measured matmul rate
TRAIN_DTYPE_BYTES = 4  # float32 weights; under bf16 autocast many activations stay float32: counted as float32
# What the parts below leave out (dropout masks, norms' statistics, an attention whose dropout makes SDPA fall back
# to the written-out path on CPU): `train --preset default --attn mha --device cpu` peaked at 6.4 GiB of resident
# memory where the parts sum to 3.2 GiB
TRAIN_UNCOUNTED = 2.0


def _attention(name: str):
    from attnbench.attention import get

    return get(name)


def _sum(parts: dict[str, int] | None) -> int:
    return sum(parts.values()) if parts else 0


# ----------------------------------------------------------------------------------------------- speed and memory
def cell_bytes(name: str, impl: str, s: BenchSettings, seq_len: int, dtype_bytes: int) -> dict[str, int] | None:
    """Peak memory of one speed or memory cell, bytes by part: inputs, weights, the activations the attention keeps
    for backward (its own estimate), as much again for the forward's transients (the score matrix a reference path
    builds before its softmax) and, with backward, the gradients of inputs, weights and activations; the step mode
    adds AdamW's two moments. None when the attention declares no activation estimate."""
    from attnbench.workload import BASELINE, BASELINES, baseline_activations

    B, T, D = s.batch, seq_len, s.d_model
    if name in BASELINES:
        act = _sum(baseline_activations(name, B, T, D, s.heads, dtype_bytes))
        inputs = (3 if name == BASELINE else 1) * B * T * D * dtype_bytes
        weights = 0 if name == BASELINE else 4 * D * D * dtype_bytes
    else:
        cls = _attention(name)
        if not hasattr(cls, "activation_estimate"):
            return None
        cfg = AttnConfig.from_kwargs(d_model=D, n_heads=s.heads, kv_heads=s.kv_heads, impl=impl, d_pos=s.d_pos)
        act = _sum(cls.activation_estimate(cfg, B, T, dtype_bytes))
        inputs = B * T * D * dtype_bytes
        weights = _sum(cls.closed_form(cfg)) * dtype_bytes if hasattr(cls, "closed_form") else 0
    parts = {"inputs": inputs, "weights": weights, "activations": act, "forward transients": act}
    if s.mode != "fwd":
        parts["gradients"] = inputs + weights + act
    if s.mode == "step":
        parts["AdamW moments"] = 2 * weights
    return parts


def cell_min_seconds(name: str, s: BenchSettings, seq_len: int, ceiling_tflops: float | None) -> float | None:
    """A lower bound on a speed cell's time: its fewest calls, each doing the attention core's FLOPs at twice the
    matmul rate measured in this run. None without a ceiling or a declared core_heads."""
    from attnbench.measure.flops import core_flops
    from attnbench.workload import BASELINES

    if not ceiling_tflops or ceiling_tflops <= 0:
        return None
    if name in BASELINES:
        heads = s.heads
    else:
        cls = _attention(name)
        if not hasattr(cls, "core_heads"):
            return None
        heads = cls.core_heads(AttnConfig.from_kwargs(d_model=s.d_model, n_heads=s.heads, kv_heads=s.kv_heads,
                                                      d_pos=s.d_pos))
    flops = core_flops(s.batch, heads, seq_len, s.d_model // s.heads, s.mode)
    return MIN_CALLS * flops / (CEILING_MARGIN * ceiling_tflops * 1e12)


# ----------------------------------------------------------------------------------------------- training
def _model_params(cfg: TrainConfig, cls, vocab: int) -> int:
    """Parameters of the language model around the attention (model.py): embedding, a learned position table
    for attentions without their own positions, per block the attention (its closed form, else MHA's four D×D
    projections), the FFN and two norms; the labml shell's untied output layer (model_labml.py)."""
    D, F = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    acfg = cfg.attn_config()
    attn = _sum(cls.closed_form(acfg)) if hasattr(cls, "closed_form") else 4 * D * D
    pos = 0 if getattr(cls, "has_positions", False) else cfg.ctx * D
    head = vocab * D if cfg.flavour == "labml" else 0
    return vocab * D + pos + cfg.n_layers * (attn + 2 * D * F + F + D + 4 * D) + 2 * D + head


def train_bytes(cfg: TrainConfig, attn: str, vocab: int, world: int = 1, per_device: int = 1,
                runs: int = 1) -> dict[str, int]:
    """Peak memory of training `attn` with `cfg` on one device, bytes by part: weights, gradients and AdamW's two
    moments; each block's saved activations (the attention's own estimate over segment + memory, else none, plus
    residuals, norms and the FFN's two B·T·d_ff tensors); the logits and their gradient in float32, B·T·vocab
    each, with the log-softmax; one block's activations again as backward's transients; the evaluation batch's
    logits; all of it times TRAIN_UNCOUNTED for what these parts leave out. `world` torchrun processes share the
    batch; `per_device` of them share the device (all of a node's on the CPU, one on a GPU); `runs` trained at once
    (separate groups in one process) multiply it all."""
    cls = _attention(attn)
    db = TRAIN_DTYPE_BYTES
    B = max(1, cfg.batch // world)
    T, D, F = cfg.ctx, cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    acfg = cfg.attn_config()
    attn_act = (_sum(cls.activation_estimate(acfg, B, T + cfg.mem_len, db))
                if hasattr(cls, "activation_estimate") else 0)
    block = attn_act + (5 * B * T * D + 2 * B * T * F) * db
    params = _model_params(cfg, cls, vocab)
    per_process = {
        "weights, gradients, AdamW": 4 * params * db,
        "activations": cfg.n_layers * block + 3 * B * T * D * db,
        "logits": 3 * B * T * vocab * 4,
        "backward transients": block,
        "evaluation logits": 2 * cfg.eval_batch * T * vocab * 4,
    }
    return {k: round(v * TRAIN_UNCOUNTED * per_device * runs) for k, v in per_process.items()}


# ----------------------------------------------------------------------------------------------- the refusal
def gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:,.0f} MiB"


def too_big(parts: dict[str, int] | None, free: int | None) -> bool:
    """The estimated peak exceeds the free memory (False when either is unknown)."""
    return parts is not None and free is not None and _sum(parts) > free


def refusal(what: str, parts: dict[str, int], free: int, where: str, hint: str, more: str = "") -> str:
    """The one line refusing `what`, whose estimated peak exceeds the free memory of `where` ('the host', 'the GPU
    (cuda:0)'): the estimate, its three largest parts, what is free and what to do. `more`: other refused items."""
    need = _sum(parts)
    top = sorted(((v, k) for k, v in parts.items() if v), reverse=True)[:3]
    detail = ", ".join(f"{k} {gib(v)}" for v, k in top)
    return (f"{what} needs about {gib(need)} ({detail}; an estimate) and {where} has {gib(free)} free{more}; "
            f"{hint}, or pass --force to run it anyway")


def check_training(cfg: TrainConfig, attns: list[str], vocab: int, device: str, world: int = 1,
                   per_device: int = 1, runs: int = 1) -> None:
    """Refuse (AttnbenchError, exit 2) a training run whose estimated peak (train_bytes, the largest over `attns`)
    exceeds the free memory of `device` ('cpu', 'cuda:N'); nothing when it fits or the machine does not say."""
    from attnbench.errors import AttnbenchError
    from attnbench.host import free_memory

    free = free_memory(device)
    estimates = [(train_bytes(cfg, a, vocab, world, per_device, runs), a) for a in attns]
    parts, attn = max(estimates, key=lambda e: _sum(e[0]))
    if too_big(parts, free):
        where = "the host" if device == "cpu" else f"the GPU ({device})"
        many = f" ({runs} runs at once)" if runs > 1 else f" ({per_device} processes)" if per_device > 1 else ""
        raise AttnbenchError(refusal(f"training {attn} at batch {cfg.batch}, ctx {cfg.ctx:,}{many}", parts, free,
                                     where, "lower --batch or --ctx"))
