"""Synthetic tasks that tell attentions apart, generated on the fly with no download (issue 13).

    TASKS, make_task(name, **options)   the registry: "shakespeare" (the character corpus, attnbench.data, read by
                                        the training loop's own path) and the synthetic tasks below
    parse_options(name, "k=v,k=v")      a task's options from one command-line string, typed by its dataclass
    task.vocab_size, task.seq_len       the model's vocabulary V and context length T
    task.batch(split, index, B)         x [B,T] int64 inputs, y [B,T] int64 targets (IGNORE where not scored),
                                        mask [B,T] bool = the scored positions: loss and accuracy only there
    task.eval_batches(split, n, B)      the first n examples of "val" or "test" in batches of B (the last may be short)
    task.test_batches(n, B)             eval_batches("test", ...): the fixed test set, n = options.test_examples

Determinism. Example e of a split is a pure function of (options, split, e): examples are generated in blocks of
BLOCK, block b from its own torch.Generator seeded by a hash of (task, seed, split, b), so an example does not
depend on the batch size that asks for it and the test set of n examples is fixed by the seed. batch(split, i, B)
holds examples i·B … i·B+B−1 of the split's stream; with a finite training set (train_examples > 0) the training
stream runs through examples 0 … N−1 in a fresh seeded permutation every epoch.

Train, validation and test are disjoint by construction. Every example has an identity, the part of it that fixes
every answer (MQAR: its key-value store; selective copying: where the data tokens sit and which they are). A fixed
hash of the identity (split_of) puts each possible identity in exactly one split (hash mod 3); a split's generator
draws candidate identities from the task's distribution, keeps those that belong to it, and only then draws the
rest of each kept example (MQAR: query places and fillers), which is independent of the identity. No test identity
can then occur in training or validation, for any seed or option set, and each split's distribution is the task's
distribution restricted to a third of the identities, chosen by a hash that is blind to the task's structure (the
cost: three candidate identities per kept example).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import torch

from attnbench.errors import AttnbenchError

SPLITS = ("train", "val", "test")
IGNORE = -100  # target where nothing is scored: F.cross_entropy's default ignore_index, Zoology's label convention
BLOCK = 1024  # examples generated together; example e of a split lives in block e // BLOCK
_STREAM_CACHE = 4  # blocks kept for batches that straddle two blocks
_HASH_PRIME, _HASH_BASE = 2**31 - 1, 0x5BD1E995


def _generator(*parts: Any) -> torch.Generator:
    """A torch generator seeded by a hash of `parts`: a stream of its own for every (task, seed, split, block)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def split_of(identities: torch.Tensor) -> torch.Tensor:
    """[m]: the split index (0 train, 1 val, 2 test) of each row of identities [m, k] (integers in [0, 2^31)):
    a polynomial hash modulo the Mersenne prime P = 2^31 − 1 (h ← h·B + id_j + 1 mod P, B = 0x5BD1E995), mod 3.
    Every intermediate stays below 2^62, so int64 arithmetic is exact on every platform."""
    h = torch.zeros(identities.shape[0], dtype=torch.long)
    for col in identities.long().unbind(dim=1):
        h = (h * _HASH_BASE + col + 1) % _HASH_PRIME
    return h % 3


def distinct(g: torch.Generator, m: int, n: int, low: int, high: int) -> torch.Tensor:
    """[m, n]: per row, n distinct integers from [low, high) in uniformly random order (a uniform draw without
    replacement, like numpy's choice(replace=False)): Floyd's algorithm for a uniform n-subset (Bentley & Floyd
    1987, "A sample of brilliance", CACM 30(9)), vectorised over rows, then a uniform shuffle of each row."""
    k = high - low
    chosen = torch.empty(m, n, dtype=torch.long)
    for i, j in enumerate(range(k - n, k)):
        t = torch.randint(0, j + 1, (m,), generator=g)
        taken = (chosen[:, :i] == t[:, None]).any(dim=1)
        chosen[:, i] = torch.where(taken, j, t)
    return chosen.gather(1, torch.rand(m, n, generator=g).argsort(dim=1)) + low


def power_law_gaps(g: torch.Generator, m: int, space: int, n: int, a: float) -> torch.Tensor:
    """[m, n]: per row, n distinct gaps from [0, space) drawn one after another without replacement with
    P(gap = i) ∝ a·(i+1)^(a−1), in draw order (Zoology's np.random.choice(space, n, replace=False, p=p)). Drawn
    as an exponential race: the n smallest E_i / p_i, E_i ~ Exp(1), arrive in the successive-sampling order
    (Plackett–Luce; Kool et al. 2019, "Stochastic Beams and Where to Find Them", arXiv 1903.06059, §2)."""
    w = torch.arange(1, space + 1, dtype=torch.float64).pow(a - 1)
    e = torch.empty(m, space, dtype=torch.float64).exponential_(generator=g)
    return (e / w).argsort(dim=1)[:, :n]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AttnbenchError(message)


# ------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class MQAROptions:
    """Defaults of Zoology's MQAR generator (HazyResearch/zoology, zoology/data/associative_recall.py,
    `multiquery_ar`: vocabulary 8192, sequence 64, 4 key-value pairs, power 0.01, random fillers, 100,000 training
    and 3,000 test examples), which are also the first point of the paper's Figure 2
    (zoology/experiments/paper/zoology_figure2.py: (T, pairs) = (64, 4), (128, 8), (256, 16), (512, 64); that
    sweep sets random_non_queries=False)."""

    vocab_size: int = 8192  # keys from [1, V/2), values from [V/2, V); 0 marks a filler position
    seq_len: int = 64  # T, even
    num_kv_pairs: int = 4  # n, 4n <= T
    power_a: float = 0.01  # query gaps: P(gap = i) ∝ a·(i+1)^(a-1); 1.0 is uniform
    random_non_queries: bool = True  # fillers become uniform random tokens from [0, V); else they stay 0
    train_examples: int = 100_000  # a finite training set, reshuffled every epoch; 0: a fresh stream
    test_examples: int = 3_000
    seed: int = 0

    def __post_init__(self) -> None:
        V, T, n = self.vocab_size, self.seq_len, self.num_kv_pairs
        _check(T > 0 and T % 2 == 0, f"mqar: seq_len must be positive and even, got {T}")
        _check(n >= 1 and 4 * n <= T, f"mqar: num_kv_pairs must be in [1, seq_len/4 = {T // 4}], got {n}")
        _check(n <= V // 2 - 1, f"mqar: vocab_size {V} holds {max(0, V // 2 - 1)} distinct keys, fewer than {n} pairs")
        _check(self.power_a > 0, f"mqar: power_a must be positive, got {self.power_a}")
        _common_checks("mqar", self)


@dataclass(frozen=True)
class SelectiveCopyingOptions:
    """Selective copying (Gu & Dao 2023, "Mamba", arXiv 2312.00752, §3.1 Figure 2 and §4.1.1; its appendix E.1:
    sequences of 4096, a vocabulary of 16 with the noise token, 16 data tokens to memorise). Construction of the
    S4 repository's generator, which the Mamba paper's task comes from (state-spaces/s4,
    src/dataloaders/datasets/copying.py, torch_copying_data with variable=True): M data tokens from [1, V−2] at
    M random positions among the first T − M, noise 0 elsewhere, then M markers V−1; at the j-th marker the
    model must output the j-th data token. test_examples is ours."""

    vocab_size: int = 16  # 0 noise, 1 … V-2 data, V-1 marker
    seq_len: int = 4096  # T = noise + 2M
    num_tokens: int = 16  # M data tokens to copy, in order
    train_examples: int = 0  # 0: a fresh stream (S4 draws a new example per item); > 0: a finite set
    test_examples: int = 1_000
    seed: int = 0

    def __post_init__(self) -> None:
        V, T, M = self.vocab_size, self.seq_len, self.num_tokens
        _check(V >= 3, f"selective-copying: vocab_size must be >= 3 (noise, marker, data), got {V}")
        _check(M >= 1 and 2 * M <= T, f"selective-copying: num_tokens must be in [1, seq_len/2 = {T // 2}], got {M}")
        _common_checks("selective-copying", self)


def _common_checks(name: str, o: Any) -> None:
    _check(o.train_examples >= 0, f"{name}: train_examples must be >= 0, got {o.train_examples}")
    _check(o.test_examples >= 1, f"{name}: test_examples must be >= 1, got {o.test_examples}")


# ------------------------------------------------------------------------------------------------- tasks
class SyntheticTask:
    """A task's examples by split and number; subclasses define the task's distribution (identities, render)."""

    name: str
    paper: str
    summary: str

    def __init__(self, options: Any):
        self.options = options
        self._blocks: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        return self.options.vocab_size

    @property
    def seq_len(self) -> int:
        return self.options.seq_len

    def config(self) -> dict[str, Any]:
        """What a record keeps: the task's name and every option."""
        return {"task": self.name, **asdict(self.options)}

    @property
    def scored_per_example(self) -> int | None:
        """How many positions of every example are scored, when that is the same for all (training then runs the
        output layer at those alone: members.scored_positions); None when it varies."""
        return None

    def identities(self, g: torch.Generator, m: int) -> torch.Tensor:
        """[m, k]: m draws of the part of an example that fixes every answer, from the task's distribution."""
        raise NotImplementedError

    def render(self, g: torch.Generator, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples of the given identities [m, k], drawing whatever else they need: x, y [m, T] int64, y
        IGNORE where nothing is scored."""
        raise NotImplementedError

    # -- examples by split and number
    def _block(self, split: str, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples b·BLOCK … b·BLOCK+BLOCK−1 of a split: the candidates with the split's own identities, in draw
        order."""
        key = (split, b)
        if key not in self._blocks:
            s, g = SPLITS.index(split), _generator(self.name, self.options.seed, split, b)
            xs, ys, need = [], [], BLOCK
            while need > 0:
                ident = self.identities(g, 3 * need + 16)
                x, y = self.render(g, ident[(split_of(ident) == s).nonzero().flatten()[:need]])
                xs.append(x.to(torch.int32))
                ys.append(y.to(torch.int32))
                need -= len(x)
            if len(self._blocks) >= _STREAM_CACHE:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[key] = torch.cat(xs), torch.cat(ys)
        return self._blocks[key]

    def examples(self, split: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y (int32) of the given example numbers of a split."""
        x = torch.empty(len(ids), self.seq_len, dtype=torch.int32)
        y = torch.empty_like(x)
        for b in torch.unique(ids // BLOCK).tolist():
            here = ids // BLOCK == b
            bx, by = self._block(split, b)
            x[here], y[here] = bx[ids[here] % BLOCK], by[ids[here] % BLOCK]
        return x, y

    def _train_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pool is None:
            n = self.options.train_examples
            xs, ys = zip(*(self.examples("train", torch.arange(b * BLOCK, min(n, (b + 1) * BLOCK)))
                           for b in range((n + BLOCK - 1) // BLOCK)))
            self._pool = torch.cat(xs), torch.cat(ys)
        return self._pool

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.options.train_examples,
                                                 generator=_generator(self.name, self.options.seed, "epoch", epoch))}
        return self._perms[epoch]

    def batch(self, split: str, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch `index` of a split's stream: x, y int64 [B,T] and mask = y != IGNORE (the scored positions)."""
        if split not in SPLITS:
            raise AttnbenchError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if index < 0 or batch_size < 1:
            raise AttnbenchError(f"batch index must be >= 0 and batch size >= 1, got {index}, {batch_size}")
        pos = torch.arange(index * batch_size, (index + 1) * batch_size)
        n = self.options.train_examples
        if split == "train" and n > 0:
            px, py = self._train_pool()
            ids = torch.cat([self._epoch_order(int(e))[pos[pos // n == e] % n] for e in torch.unique(pos // n)])
            x, y = px[ids], py[ids]
        else:
            x, y = self.examples(split, pos)
        x, y = x.long(), y.long()
        return x, y, y != IGNORE

    def eval_batches(self, split: str, n: int, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Examples 0 … n−1 of a split ("val" or "test"), in batches of batch_size; the last may be shorter."""
        if split == "train":
            raise AttnbenchError("eval_batches is for the val and test splits")
        for start in range(0, n, batch_size):
            x, y = self.examples(split, torch.arange(start, min(n, start + batch_size)))
            x, y = x.long(), y.long()
            yield x, y, y != IGNORE

    def test_batches(self, n: int | None = None, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, ...]]:
        """The test set: its first n examples (default options.test_examples), fixed by the seed."""
        return self.eval_batches("test", self.options.test_examples if n is None else n, batch_size)


class MQAR(SyntheticTask):
    """Multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927, §3; construction of
    HazyResearch/zoology, zoology/data/associative_recall.py, `multiquery_ar`, reproduced token for token in
    distribution, not bit for bit, since numpy's generator is replaced by torch's):

        x: k_1 v_1 … k_n v_n | queries: k_j at position 2n + 2·gap_j, every other position a filler
        y: v_j at the position of the query k_j (the next token it asks for), IGNORE elsewhere

    The n keys are distinct, uniform over [1, V/2); the n values distinct, uniform over [V/2, V). The gaps are
    drawn without replacement from [0, (T−2n)/2) with P(i) ∝ a·(i+1)^(a−1) (a = 0.01: most queries come soon
    after the store), the j-th draw going to the j-th pair of the store. Fillers are 0, or, with random_non_queries,
    uniform tokens from [0, V) (which may repeat a key; they are never scored). Only the n queried values are
    scored, as Zoology's labels of -100 elsewhere say. The identity is the store x[:2n]."""

    name = "mqar"
    paper = "Arora et al. 2023, arXiv 2312.04927"
    summary = "Multi-query associative recall: n key-value pairs, then the keys again; predict each key's value."

    @property
    def scored_per_example(self) -> int:
        return self.options.num_kv_pairs  # the n queries: distinct positions (distinct gaps)

    def identities(self, g, m):
        V, n = self.options.vocab_size, self.options.num_kv_pairs
        store = torch.empty(m, 2 * n, dtype=torch.long)  # k_1 v_1 … k_n v_n
        store[:, 0::2] = distinct(g, m, n, 1, V // 2)
        store[:, 1::2] = distinct(g, m, n, V // 2, V)
        return store

    def render(self, g, store):
        o = self.options
        (m, two_n), V, T = store.shape, o.vocab_size, o.seq_len
        keys, values = store[:, 0::2], store[:, 1::2]  # [m, n] each
        gaps = power_law_gaps(g, m, (T - two_n) // 2, two_n // 2, o.power_a)  # [m, n]: j-th draw, j-th pair
        query = two_n + 2 * gaps  # [m, n] positions of the queried keys
        x = torch.zeros(m, T, dtype=torch.long)
        x[:, :two_n] = store
        x.scatter_(1, query, keys)
        y = torch.full((m, T), IGNORE, dtype=torch.long).scatter_(1, query, values)
        if o.random_non_queries:
            x = torch.where(x == 0, torch.randint(0, V, (m, T), generator=g), x)
        return x, y


class SelectiveCopying(SyntheticTask):
    """Selective copying (Gu & Dao 2023, "Mamba", arXiv 2312.00752, §3.1 Figure 2, §4.1.1; generator of
    state-spaces/s4, src/dataloaders/datasets/copying.py, torch_copying_data(L, M, A, variable=True)):

        x: [T − M positions: M data tokens d_1 … d_M in order at random places, noise 0 elsewhere] [M markers V−1]
        y: d_j at the j-th marker, IGNORE elsewhere

    With L = T − 2M noise positions, the data positions are a uniform M-subset of the first L + M, sorted; the data
    tokens are uniform over [1, V−2], repeats allowed. Solving it takes order, not content: at the j-th marker the
    model must find the j-th non-noise token, wherever it sits. The identity is (positions, tokens)."""

    name = "selective-copying"
    paper = "Gu & Dao 2023, arXiv 2312.00752"
    summary = "Selective copying: M tokens scattered in noise; after M markers, output them in order."

    @property
    def scored_per_example(self) -> int:
        return self.options.num_tokens  # the M markers

    def identities(self, g, m):
        V, T, M = self.options.vocab_size, self.options.seq_len, self.options.num_tokens
        tokens = torch.randint(1, V - 1, (m, M), generator=g)  # [m, M]
        where = distinct(g, m, M, 0, T - M).sort(dim=1).values  # [m, M] sorted positions among the first T-M
        return torch.cat([where, tokens], dim=1)

    def render(self, g, identity):
        V, T, M = self.options.vocab_size, self.options.seq_len, self.options.num_tokens
        where, tokens = identity[:, :M], identity[:, M:]
        x = torch.zeros(len(identity), T, dtype=torch.long).scatter_(1, where, tokens)
        x[:, T - M:] = V - 1
        y = torch.full_like(x, IGNORE)
        y[:, T - M:] = tokens
        return x, y


# ------------------------------------------------------------------------------------------------- registry
TASKS: dict[str, tuple[type[SyntheticTask], type] | None] = {
    "shakespeare": None,  # the character corpus: attnbench.data, the training loop's own path
    "mqar": (MQAR, MQAROptions),
    "selective-copying": (SelectiveCopying, SelectiveCopyingOptions),
}


def check_task(name: str) -> str:
    if name not in TASKS:
        raise AttnbenchError(f"unknown task {name!r}; valid: {', '.join(TASKS)}", exit_code=2)
    return name


def _entry(name: str) -> tuple[type[SyntheticTask], type]:
    entry = TASKS[check_task(name)]
    if entry is None:
        raise AttnbenchError(f"task {name!r} is the text corpus, read by attnbench.data, not a synthetic task")
    return entry


def make_task(name: str, **options: Any) -> SyntheticTask:
    """The synthetic task `name` with the given options (the rest at their defaults)."""
    cls, opts = _entry(name)
    known = {f.name for f in fields(opts)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise AttnbenchError(f"unknown {name} option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return cls(opts(**options))


def parse_options(name: str, spec: str | None) -> dict[str, Any]:
    """'num_kv_pairs=8,seq_len=128' -> {'num_kv_pairs': 8, 'seq_len': 128}, typed by the task's option fields."""
    _, opts = _entry(name)
    types = {f.name: type(f.default) for f in fields(opts)}
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in types:
            raise AttnbenchError(f"task option {item!r}: expected NAME=VALUE with NAME one of {', '.join(types)}")
        t = types[key]
        try:
            if t is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            else:
                out[key] = t(value)
        except ValueError:
            raise AttnbenchError(f"task option {key}: {value!r} is not a {t.__name__}") from None
    return out


def describe() -> list[dict[str, Any]]:
    """One row per task: its name, paper, summary and options with their defaults (`attnbench list --tasks`)."""
    rows = [{"task": "shakespeare", "paper": "Karpathy 2015 (char-rnn)", "options": "-",
             "summary": "Next character of Tiny Shakespeare (the default): 90/5/5 split, full-pass test accuracy."}]
    for name, (cls, opts) in ((n, e) for n, e in TASKS.items() if e is not None):
        rows.append({"task": name, "paper": cls.paper, "summary": cls.summary,
                     "options": ", ".join(f"{f.name}={f.default}" for f in fields(opts))})
    return rows
