"""Tiny Shakespeare: find it, verify it, encode it per character, split it 90/5/5 (issue 4, Data); and the order in
which training reads it (Batches).

Lookup order: --data PATH, the ATTNBENCH_DATA environment variable, the user cache
($XDG_CACHE_HOME or ~/.cache)/attnbench/tinyshakespeare/input.txt, else a download from the canonical address with
the sha256 verified and an atomic write into the cache (../shared/data/tinyshakespeare/README.md).
A file whose checksum differs is refused, except one the user names with --data (any UTF-8 text, own vocabulary).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from attnbench.errors import AttnbenchError

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
ENV_VAR = "ATTNBENCH_DATA"
SPLIT = (0.90, 0.05, 0.05)  # train, validation, test; contiguous, in this order


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_CACHE_HOME/attnbench, else ~/.cache/attnbench."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attnbench"


def cache_path(env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / "tinyshakespeare" / "input.txt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _how_to_provide() -> str:
    return f"download {URL} and pass --data PATH (or set {ENV_VAR}=PATH)"


def _verified(path: Path, where: str, expected: str) -> Path:
    if not path.is_file():
        raise AttnbenchError(f"data file from {where} not found: {path}")
    got = sha256_of(path.read_bytes())
    if got != expected:
        raise AttnbenchError(f"{path} (from {where}) has sha256 {got[:12]}…, not Tiny Shakespeare's {expected[:12]}…; "
                             f"pass it explicitly with --data to use it anyway, or delete it")
    return path


def download(url: str, dest: Path, expected: str = SHA256, timeout: float = 30.0) -> Path:
    """Fetch url, check its sha256, then write it to dest atomically (temporary file + rename)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            payload = r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise AttnbenchError(f"Tiny Shakespeare is not on this machine and cannot be downloaded ({reason}); "
                             f"{_how_to_provide()}") from None
    got = sha256_of(payload)
    if got != expected:
        raise AttnbenchError(f"downloaded {url} has sha256 {got[:12]}…, expected {expected[:12]}…; refused "
                             f"(nothing written); {_how_to_provide()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".input.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def find_corpus(data: str | os.PathLike | None = None, env: Mapping[str, str] | None = None, url: str = URL,
                expected: str = SHA256) -> tuple[Path, str]:
    """(path, where it came from: "--data" | ENV_VAR | "cache" | "download"), in the documented order."""
    env = os.environ if env is None else env
    if data is not None:
        p = Path(data).expanduser()
        if not p.is_file():
            raise AttnbenchError(f"--data file not found: {p}")
        return p, "--data"
    if env.get(ENV_VAR):
        return _verified(Path(env[ENV_VAR]).expanduser(), ENV_VAR, expected), ENV_VAR
    cached = cache_path(env)
    if cached.exists():
        return _verified(cached, "the cache", expected), "cache"
    return download(url, cached, expected), "download"


@dataclass
class Corpus:
    """Character vocabulary of the whole text and the contiguous 90/5/5 split, as int64 token tensors."""

    chars: list[str]
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    source: str = ""
    sha256: str = ""
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        return [self.stoi[c] for c in s]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split_sizes(n: int) -> tuple[int, int, int]:
    """Contiguous 90/5/5: train and validation rounded down, test takes the rest."""
    n_train, n_val = int(n * SPLIT[0]), int(n * SPLIT[1])
    return n_train, n_val, n - n_train - n_val


def corpus_from_text(text: str, source: str = "", sha: str = "") -> Corpus:
    if len(text) < 100:
        raise AttnbenchError(f"data file {source or ''} is too short ({len(text)} characters) to split 90/5/5")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    a, b, _ = split_sizes(len(ids))
    return Corpus(chars, ids[:a], ids[a:a + b], ids[a + b:], source=source, sha256=sha)


def load_corpus(data: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Corpus:
    path, where = find_corpus(data, env)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttnbenchError(f"{path} is not UTF-8 text (byte {e.start})") from None
    return corpus_from_text(text, source=f"{path} ({where})", sha=sha256_of(raw))


# ---------------------------------------------------------------------------------------------- data order
class Batches:
    """Training batches as a pure function of (seed, rank, step), so that every attention sees the same data in
    the same order and a resumed run continues the same sequence.

    `batch` is the GLOBAL batch b. Step s draws b rows from a generator seeded by (seed, s) alone; rank r of a world
    of W processes takes rows [r·b/W, (r+1)·b/W). So the ranks' batches differ, their union is exactly the
    one-process batch of that step, and a checkpoint resumes under any world size that divides b.

    mem_len == 0: random windows of ctx + 1 tokens. mem_len > 0: `batch` contiguous streams over the training text
    (Transformer-XL, Dai et al. 2019, §3.2), read segment by segment; `restarts(step)` says when memories restart."""

    def __init__(self, data: torch.Tensor, batch: int, ctx: int, mem_len: int, seed: int, rank: int = 0,
                 world: int = 1):
        if batch % world:
            raise AttnbenchError(f"batch {batch} (the global batch) is not divisible by the {world} processes; "
                                 f"use a multiple of {world}")
        self.data, self.batch, self.ctx, self.seed = data, batch, ctx, seed
        self.rows = slice(rank * batch // world, (rank + 1) * batch // world)  # this rank's share
        self.streams = mem_len > 0
        if len(data) < ctx + 2:
            raise AttnbenchError(f"training text ({len(data)} tokens) is shorter than ctx + 2 ({ctx + 2})")
        if self.streams:
            per = len(data) // batch
            self.n_seg = (per - 1) // ctx
            if self.n_seg < 1:
                raise AttnbenchError(f"training text too short for {batch} streams of ctx {ctx}")
            self.stream = data[: per * batch].view(batch, per)[self.rows]  # [b/W, per]

    @property
    def steps_per_epoch(self) -> int:
        if self.streams:
            return self.n_seg
        return max(1, (len(self.data) - 1) // (self.batch * self.ctx))

    def restarts(self, step: int) -> bool:
        """Whether Transformer-XL memory starts empty at this step (a new epoch of the streams)."""
        return self.streams and step % self.n_seg == 0

    @property
    def seeded(self) -> bool:
        """Whether the batches depend on the seed (random windows) or not (the streams)."""
        return not self.streams

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of [b/W, ctx]: this rank's inputs and next-token targets."""
        if self.streams:
            off = (step % self.n_seg) * self.ctx
            return self.stream[:, off:off + self.ctx], self.stream[:, off + 1:off + self.ctx + 1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        ix = torch.randint(0, len(self.data) - self.ctx - 1, (self.batch,), generator=g)[self.rows]
        w = self.data[ix[:, None] + torch.arange(self.ctx + 1)]  # [b/W, ctx+1]: window i reads data[ix_i ...]
        return w[:, :-1], w[:, 1:]
