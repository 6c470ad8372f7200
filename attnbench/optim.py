"""The optimiser side of training: the learning-rate schedule, AdamW, autocast, and one eager optimiser step
(graphed.py is its CUDA-graph twin)."""

from __future__ import annotations

import contextlib
import math

import torch

from attnbench.config import TrainConfig
from attnbench.model import lm_loss


def lr_at(step: int, c: TrainConfig, total: int) -> float:
    """Learning rate for optimiser step `step` (0-based).

    cosine: linear warm-up to lr, then half a cosine down to min_lr at `total` (Loshchilov & Hutter 2017, eq. 5).
    noam: lr * min(s / warmup, sqrt(warmup / s)), s = step + 1 (Vaswani et al. 2017, eq. 3, scaled to peak lr)."""
    s = step + 1
    if c.schedule == "noam":
        w = max(1, c.warmup)
        return c.lr * min(s / w, math.sqrt(w / s))
    if c.warmup and s <= c.warmup:
        return c.lr * s / c.warmup
    frac = min(1.0, (s - c.warmup) / max(1, total - c.warmup))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * frac))


def make_optimizer(model: torch.nn.Module, c: TrainConfig, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms, biases, embeddings' rows are matrices too).
    capturable: safe to capture in a CUDA graph (attnbench.graphed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=device.type == "cuda",
                             capturable=capturable)


def autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, opt, x, y, mems, lr: float, grad_clip: float, amp_ctx) -> tuple[torch.Tensor, list | None]:
    """One optimiser step on (x, y); returns the (device) loss and the new memories. No host sync."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp_ctx:
        logits, new_mems = model(x, mems)
        loss = lm_loss(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach(), new_mems
