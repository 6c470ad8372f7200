"""The one device parser: every command takes --device auto|cpu|cuda|cuda:N and reads it here."""

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
