"""Data parallelism on PyTorch's own engine (issue 7): torchrun starts the processes, torch.distributed connects them.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env` reads them and joins the
process group (NCCL on GPUs, gloo on CPU). Without them (a plain `attnbench train`) nothing is initialised and every
helper here is a no-op for one process, so the training code has one path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from attnbench.errors import AttnbenchError

TIMEOUT = timedelta(minutes=10)  # a rank that waits longer than this on the others gives up (collective timeout)


@dataclass(frozen=True)
class Proc:
    """Where this process sits: rank r of world W, GPU LOCAL_RANK on its host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Proc()


def from_env(env=None) -> Proc:
    """The torchrun variables, checked; SINGLE when WORLD_SIZE is unset."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        p = Proc(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))
    except (KeyError, ValueError):
        raise AttnbenchError("WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not integers; start with "
                             "torchrun --nproc-per-node N -m attnbench train ...") from None
    if not 0 <= p.rank < p.world:
        raise AttnbenchError(f"RANK={p.rank} is outside WORLD_SIZE={p.world}")
    return p


def init_from_env(device_type: str) -> Proc:
    """Join the process group when started by torchrun (NCCL for cuda, gloo otherwise); on CUDA pin this process
    to GPU LOCAL_RANK. Returns SINGLE (and initialises nothing) for a plain single-process run."""
    p = from_env()
    if p.world == 1 or dist.is_initialized():
        return p
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if p.local_rank >= torch.cuda.device_count():
            raise AttnbenchError(f"LOCAL_RANK={p.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                                 f"use --nproc-per-node <= the GPUs per host")
        torch.cuda.set_device(p.local_rank)
    kw = {"device_id": torch.device("cuda", p.local_rank)} if device_type == "cuda" else {}
    dist.init_process_group(backend, rank=p.rank, world_size=p.world, timeout=TIMEOUT, **kw)
    return p


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over the ranks, in place, returned (identity for one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum of `t` over the ranks, in place, returned (identity for one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` when several processes run (gradients averaged over ranks in
    backward); the model itself otherwise. Keep the unwrapped model for state_dict and evaluation."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def cleanup() -> None:
    """Leave the process group (safe to call twice, or when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a peer already gone: nothing left to tidy
            pass


def is_collective_failure(e: BaseException) -> bool:
    """A peer died or timed out (gloo: connection closed/reset; NCCL: DistBackendError, watchdog timeout)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(s in text for s in ("gloo", "nccl", "connection", "timed out",
                                                                    "peer"))


@contextlib.contextmanager
def interrupts_once():
    """While several processes run: the first SIGINT or SIGTERM raises KeyboardInterrupt, later ones are ignored.

    A terminal's Ctrl-C reaches every rank and torchrun then forwards its own copy; without this the second one
    would interrupt rank 0 while it saves the checkpoint and the partial record."""
    if not active() or threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()

    def handler(signum, frame):
        if not fired.is_set():
            fired.set()
            raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def session(device_type: str):
    """A command's time in the process group of a torchrun launch (nothing to join for one process): joined, the
    first Ctrl-C taken once, a peer's failure turned into one line (exit 1), the group left at the end."""
    from attnbench.errors import RunFailed

    proc = init_from_env(device_type)
    try:
        with interrupts_once():
            yield proc
    except Exception as e:
        if not (proc.world > 1 and is_collective_failure(e)):
            raise
        raise RunFailed(f"another process stopped ({type(e).__name__}); torchrun's summary names its rank") from None
    finally:
        cleanup()
