"""Every config dataclass and preset of attnbench; each default is declared here and nowhere else (style.md, habit 5).

    AttnConfig      the settings every attention is built from
    ModelConfig     the character language model around it (model.py)
    TrainConfig     one training run; PRESETS default / paper / mqar / tiny; make_config(preset, **overrides)
    TrainJob        what `attnbench train` runs (attentions × seeds) and where its files go; kept for --resume
    BenchSettings   the speed and memory sweeps
    ParamsSettings, ReportSettings   the params and report commands
The CLI reads its option defaults from these classes. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from attnbench.errors import AttnbenchError

RESULTS_DIR = "results/scratch"  # new records by default: ignored by git; committed results only where the user says
FORMAT = "table"  # screen output of every command (tables.FORMATS)
IMPLS = ("reference", "fast")
POS_KINDS = ("sinusoid", "learned")
FLAVOURS = ("attnbench", "labml")


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
    # MHA, MDHA, RMHA, RCMHA: "labml" builds the layer as the RCMHA authors' labml code does (attention.md, RCMHA):
    # labml's biases and PyTorch's default initialisation, one convolution kernel per head channel shared by the
    # heads and with a bias, the query convolved over the current segment only
    flavour: str = "attnbench"

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
        if self.flavour not in FLAVOURS:
            raise AttnbenchError(f"flavour must be one of {', '.join(FLAVOURS)}, got {self.flavour!r}")
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


# ---------------------------------------------------------------------------------------------- the model
ACTS = ("gelu", "relu", "relu2")  # FFN activations (model.activation)


@dataclass
class ModelConfig:
    """A pre-LayerNorm decoder-only character LM around attention `attn` (model.py)."""

    vocab: int
    attn: str
    attn_cfg: AttnConfig
    n_layers: int
    d_ff: int
    ctx: int  # segment length T; size of the learned position table
    dropout: float
    act: str
    mem_len: int = 0


# ---------------------------------------------------------------------------------------------- training
SCHEDULES = ("cosine", "noam")


@dataclass
class TrainConfig:
    """One training run. Field names are the CLI flags (underscores -> dashes). Every attention of a comparison gets
    the same settings; attention settings (pos, kv_heads) go to every attention's AttnConfig."""

    # model
    n_layers: int = 6
    d_model: int = 384
    n_heads: int = 6
    kv_heads: int | None = None  # AttnConfig.kv_heads (gqa)
    d_ff: int = 0  # FFN width; 0: 4 * d_model
    act: str = "gelu"  # FFN activation, the same for every attention: gelu | relu | relu2 (Primer's relu²)
    dropout: float = 0.2
    ctx: int = 256  # context (segment) length T
    mem_len: int = 0  # Transformer-XL memory M; > 0 switches to contiguous segment streams
    attn_impl: str = AttnConfig.impl
    pos: str = AttnConfig.pos  # AttnConfig.pos: relative positions, sinusoid | learned (labml tables)
    max_rel: int = AttnConfig.max_rel  # AttnConfig.max_rel: learned tables of 2·max_rel distances (at least ctx+mem)
    flavour: str = AttnConfig.flavour  # attnbench | labml: the RCMHA authors' layer, model shell and schedule
    # optimisation
    batch: int = 64
    steps: int = 5000
    epochs: float = 0.0  # > 0: steps = epochs * train tokens / (batch * ctx)
    lr: float = 1e-3  # peak learning rate (also for Noam: the value at the end of warm-up)
    min_lr: float = 1e-4  # cosine floor
    schedule: str = "cosine"
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: off
    # task
    task: str = "shakespeare"  # shakespeare (the corpus) | a synthetic task of tasks.py: mqar, selective-copying
    task_opts: str = ""  # a synthetic task's options, "name=value,...": its sequence length is the context
    # evaluation
    eval_ctx: str = ""  # length extrapolation: the test split also scored at these contexts, "256,512,..." (mem-len 0)
    eval_every: int = 500
    eval_stride: int = 0  # sliding-window stride; 0: ctx // 2 (every scored position sees >= ctx/2 of context)
    eval_batch: int = 64
    log_every: int = 10
    # runtime
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (device.resolve_device)
    amp: bool = True  # bf16 autocast on GPU (ignored on CPU)
    compile: bool = False  # torch.compile the training step's model (GPU)
    cuda_graph: bool = True  # replay the training step as a CUDA graph (GPU, mem-len 0, one process, no --compile)

    def resolved(self) -> "TrainConfig":
        """Derived fields filled in, everything checked; one clear line (exit 2) for settings that make no sense."""
        c = replace(self)
        if c.d_ff == 0:
            c.d_ff = 4 * c.d_model
        if c.eval_stride == 0:
            c.eval_stride = max(1, c.ctx // 2)
        check_finite(c)
        for name in ("n_layers", "d_model", "n_heads", "d_ff", "ctx", "batch", "eval_every", "eval_batch",
                     "log_every"):
            if getattr(c, name) <= 0:
                raise AttnbenchError(f"{flag(name)} must be positive, got {getattr(c, name)}")
        for name in ("mem_len", "warmup", "weight_decay", "grad_clip", "min_lr", "epochs", "steps"):
            if getattr(c, name) < 0:
                raise AttnbenchError(f"{flag(name)} must be >= 0, got {getattr(c, name)}")
        if c.steps == 0 and c.epochs == 0:
            raise AttnbenchError("steps and epochs are both 0: nothing to train")
        if not 0 < c.lr < 10:
            raise AttnbenchError(f"lr must be in (0, 10), got {c.lr}")
        if c.schedule == "cosine" and c.min_lr > c.lr:
            raise AttnbenchError(f"min-lr ({c.min_lr}) is above lr ({c.lr}): the cosine would rise")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(c, name) < 1:
                raise AttnbenchError(f"{name} must be in [0, 1), got {getattr(c, name)}")
        if not 1 <= c.eval_stride <= c.ctx:
            raise AttnbenchError(f"eval-stride must be in [1, ctx={c.ctx}], got {c.eval_stride}")
        if c.schedule not in SCHEDULES:
            raise AttnbenchError(f"schedule must be one of {', '.join(SCHEDULES)}, got {c.schedule!r}")
        if c.act not in ACTS:
            raise AttnbenchError(f"act must be one of {', '.join(ACTS)}, got {c.act!r}")
        c.eval_ctx = ",".join(map(str, c.eval_lengths))
        if c.eval_ctx and c.mem_len:
            raise AttnbenchError("--eval-ctx scores windows without memory: it needs mem-len 0")
        c.attn_config()  # the attention's own checks (heads divide d-model, pos, ...)
        return c

    @property
    def eval_lengths(self) -> tuple[int, ...]:
        """--eval-ctx as sorted distinct context lengths; one line (exit 2) for anything but positive integers."""
        items = [t.strip() for t in self.eval_ctx.split(",") if t.strip()]
        try:
            lengths = sorted({int(t) for t in items})
        except ValueError:
            lengths = None
        if lengths is None or (lengths and lengths[0] <= 0):
            raise AttnbenchError(f"--eval-ctx must be positive integers separated by commas, got {self.eval_ctx!r}")
        return tuple(lengths)

    def attn_config(self) -> AttnConfig:
        """The attention settings of this run, the same for every attention; attention dropout = model dropout;
        the learned relative tables reach as far as a query sees (segment + memory)."""
        return AttnConfig(d_model=self.d_model, n_heads=self.n_heads, kv_heads=self.kv_heads, dropout=self.dropout,
                          impl=self.attn_impl, pos=self.pos, max_rel=max(self.max_rel, self.ctx + self.mem_len),
                          flavour=self.flavour)

    def model_config(self, attn: str, vocab: int) -> ModelConfig:
        return ModelConfig(vocab=vocab, attn=attn, attn_cfg=self.attn_config(), n_layers=self.n_layers,
                           d_ff=self.d_ff or 4 * self.d_model, ctx=self.ctx, dropout=self.dropout, act=self.act,
                           mem_len=self.mem_len)


# The TrainConfig fields that are attention settings: given by the user, each must be read by an attention of the run.
ATTN_SETTINGS = {"kv_heads": "kv_heads", "pos": "pos", "max_rel": "max_rel", "flavour": "flavour"}  # TrainConfig field -> AttnConfig field

PRESETS: dict[str, TrainConfig] = {
    # nanoGPT's shakespeare_char configuration (issue 4, Model and presets).
    "default": TrainConfig(),
    # The RCMHA authors' run, as their code runs it (attention.md, RCMHA; docs/paper.md): labml's Transformer-XL
    # shell and layers (flavour labml, learned relative tables of 2·4096 rows), 6 layers, D=128, 8 heads, FFN 256,
    # dropout 0, segment 2, memory 32, batch 32, 10 epochs of labml's train/validation rounds (paper_run.py), Adam
    # with labml's Noam schedule, warm-up 2000, clipping 1.0, plain ReLU for every attention, float32.
    # Noam: lr = d^-0.5 · min(s^-0.5, s · w^-1.5) = peak · min(s/w, sqrt(w/s)), peak = 128^-0.5 · 2000^-0.5 =
    # 1.976e-3 (Vaswani et al. 2017, eq. 3; labml_nn optimizers/noam.py with learning_rate 1).
    "paper": TrainConfig(n_layers=6, d_model=128, n_heads=8, d_ff=256, act="relu", dropout=0.0, ctx=2,
                         mem_len=32, batch=32, epochs=10, schedule="noam", warmup=2000, lr=128 ** -0.5 * 2000 ** -0.5,
                         weight_decay=0.0, beta2=0.999, grad_clip=1.0, eval_every=5000, eval_batch=128,
                         log_every=50, pos="learned", max_rel=4096, flavour="labml", amp=False),
    # Multi-query associative recall where attentions separate (issue 20; docs/usage.md, "Synthetic tasks"): Zoology's
    # generator and 2-layer model (arXiv 2312.04927, Figure 2: vocabulary 8192, no filler noise), at the densest
    # point of T=64, 16 key-value pairs; 3000 steps of batch 256 (7.7 passes over the 100,000 training examples) at
    # lr 3e-3, where mha at D=128 reaches test accuracy 0.9997 on an H200 (results/h200/mqar/).
    "mqar": TrainConfig(task="mqar", task_opts="seq_len=64,num_kv_pairs=16,random_non_queries=false", n_layers=2,
                        d_model=128, n_heads=4, dropout=0.0, ctx=64, batch=256, steps=3000, lr=3e-3, min_lr=0.0,
                        warmup=200, eval_every=500, eval_stride=64),
    # A CPU smoke run of seconds.
    "tiny": TrainConfig(n_layers=2, d_model=64, n_heads=4, d_ff=128, dropout=0.0, ctx=64, batch=16, steps=120,
                        lr=3e-3, min_lr=3e-4, warmup=10, eval_every=60, eval_stride=64, eval_batch=128, log_every=10),
}

TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


def make_config(preset: str = "default", **overrides: Any) -> TrainConfig:
    """A preset with the given fields replaced (None means: keep the preset's value)."""
    if preset not in PRESETS:
        raise AttnbenchError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(TRAIN_FIELDS))
    if unknown:
        raise AttnbenchError(f"unknown training setting(s): {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in given and "epochs" not in given:
        given["epochs"] = 0.0  # an explicit --steps wins over a preset's epochs
    if "ctx" in given and "eval_stride" not in given:
        given["eval_stride"] = 0  # an explicit --ctx: the default stride of that context (ctx/2), not the preset's
    base = PRESETS[preset]
    if base.task_opts and given.get("task", base.task) == base.task:  # --task-opt k=v changes k only
        given["task_opts"] = merge_options(base.task_opts, given.get("task_opts", ""))
    elif base.task_opts:  # another task: the preset's options were for its own
        given.setdefault("task_opts", "")
    return replace(base, **given)


def merge_options(base: str, more: str) -> str:
    """Two "name=value,..." strings as one, the second's values winning: a preset's task options with the user's."""
    merged: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in f"{base},{more}".split(","))):
        name, _, value = part.partition("=")
        merged[name.strip()] = value.strip()
    return ",".join(f"{k}={v}" for k, v in merged.items())


@dataclass
class TrainJob:
    """What one `attnbench train` runs, attentions × seeds, and where its files go. Saved with its checkpoints
    (checkpoints.py), so that --resume continues every run of it with the same files."""

    attn: str = "mha"  # comma-separated registry names, or 'all'
    preset: str = "default"
    seeds: int = 1  # seeds cfg.seed … cfg.seed + seeds - 1, each shared by every attention
    sample: int = 0  # characters generated after training
    # seeds of one attention trained as one stacked model (training/members.py): "auto" (every seed of an attention
    # at once where that is faster: a GPU, one process; split when out of memory), "off" (each seed alone), or N
    ensemble: str = "auto"
    data: str | None = None  # corpus file; None: the lookup order of data.find_corpus
    results_dir: str = RESULTS_DIR
    checkpoints_dir: str = "checkpoints"
    threads: int | None = None  # CPU: torch's threads; None: the cores other work leaves idle (host.cpu_threads)
    force: bool = False  # train even where the size guard (guard.py) estimates it will not fit in free memory
    # this command's time budget, seconds from its start: stop (exit 75) at the last stop point where the next
    # stretch of training would not end in time (engine._at_stop_point); None: no budget
    stop_after: float | None = None


# ---------------------------------------------------------------------------------------------- speed, memory
@dataclass
class BenchSettings:
    """Every default of the speed and memory sweeps (bench.py)."""

    seq_lens: tuple[int, ...] = (1024,)
    batch: int = 4
    heads: int = AttnConfig.n_heads
    d_model: int = AttnConfig.d_model
    kv_heads: int | None = None
    d_pos: int | None = None  # rmha/rcmha sinusoid width d_R (None: AttnConfig's default, the head width)
    attn: str | None = None  # None: every registered attention
    dtype: str | None = None  # None: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    mode: str = "fwd+bwd"
    impl: str = "fast"
    compile: bool = False
    cuda_graph: bool = False  # speed: time replays of the call captured as a CUDA graph (GPU work, no host overhead)
    flush_l2: bool = False
    baseline: bool = True  # the bare SDPA row
    check_seq_len: int = 64  # size of the fast-vs-reference check
    max_time_s: float = 2.0  # time cap per measurement
    # a cell still running after this many seconds is stopped and recorded as `timeout`; None: cell_timeout_s's
    timeout_s: float | None = None
    force: bool = False  # run cells the size guard refuses (too big for free memory, or sure to pass the timeout)
    threads: int | None = None  # CPU measurements: torch's threads (None: the cores other work leaves idle)
    results_dir: str = RESULTS_DIR

    def cell_timeout_s(self, kind: str) -> float:
        """The time limit of one cell: timeout_s, else SPEED_TIMEOUT for speed, MEMORY_TIMEOUT_S for memory."""
        if self.timeout_s is not None:
            return self.timeout_s
        return SPEED_TIMEOUT[0] + SPEED_TIMEOUT[1] * self.max_time_s if kind == "speed" else MEMORY_TIMEOUT_S


# A cell's default time limit. Speed: seconds + factor × max_time_s (a cell of calls each as long as max_time_s takes
# about 15 × max_time_s: the first call, warm-up, a block of five). Memory: a fresh process, then two calls.
SPEED_TIMEOUT = (60.0, 20.0)
MEMORY_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------------------------------- params, report
@dataclass
class ParamsSettings:
    layers: int = 1
    save: bool = False  # also write the rows as records
    results_dir: str = RESULTS_DIR


@dataclass
class ReportSettings:
    records: str = "results"  # where `report` reads records by default (every *.jsonl below it)
    out: str = "results/scratch/report"  # where it writes report.md and the plots; the committed report only by --out
    plots: bool = True


# ---------------------------------------------------------------------------------------------- checks
def flag(name: str) -> str:
    """A field's CLI spelling: n_layers -> layers, other underscores -> dashes."""
    return {"n_layers": "layers", "n_heads": "heads", "max_time_s": "max-time", "timeout_s": "timeout"}.get(
        name, name.replace("_", "-"))


def check_finite(obj: Any) -> None:
    """Every float field of a config dataclass is a finite number (nan and inf are refused, one line)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise AttnbenchError(f"--{flag(f.name)} must be a finite number, got {v}")
