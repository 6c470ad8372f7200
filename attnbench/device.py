"""The one device parser: every command takes --device auto|cpu|cuda|cuda:N and reads it here. And the one side
stream per GPU on which CUDA graphs are warmed up and captured (side_stream)."""

from __future__ import annotations

from attnbench.errors import AttnbenchError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str):
    """The torch.device for `spec`; auto is the GPU when torch sees one, else the CPU. One line (exit 2) for a
    device that is unknown or absent, in every command alike."""
    import torch

    spec = str(spec).strip()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise AttnbenchError(f"unknown device {spec!r}; use {CHOICES}") from None
    if dev.type == "cpu" and dev.index is None:
        return dev
    if dev.type != "cuda":
        raise AttnbenchError(f"unknown device {spec!r}; use {CHOICES}")
    if not torch.cuda.is_available():
        raise AttnbenchError(f"--device {spec}: no CUDA GPU is visible to torch {torch.__version__} here "
                             f"(use --device cpu or auto)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise AttnbenchError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev


def select(spec: str) -> str:
    """'cuda' or 'cpu' for code that works on the current device: resolve `spec` and, for cuda:N, make GPU N the
    current one (so that 'cuda' means it everywhere after)."""
    dev = resolve_device(spec)
    if dev.type == "cuda" and dev.index is not None:
        import torch

        torch.cuda.set_device(dev.index)
    return dev.type


_SIDE: dict = {}


def side_stream(device):
    """The side stream on which every CUDA-graph capture of this process warms up and captures (PyTorch's CUDA
    semantics notes, "CUDA Graphs"), one per GPU. One and the same: PyTorch keeps a cuBLAS workspace for each (handle,
    stream) pair until the process ends (pytorch/pytorch#95668), so a fresh stream per capture leaves one more
    workspace allocated after every run of a command until the stream pool wraps: the likely cause of the 65 MiB more
    allocator peak each MQAR run read on an H200 than the run before (tests/test_memory_cuda.py checks it)."""
    import torch

    key = torch.device(device).index if torch.device(device).index is not None else torch.cuda.current_device()
    if key not in _SIDE:
        _SIDE[key] = torch.cuda.Stream(key)
    return _SIDE[key]
