"""The optimiser side of training: the learning-rate schedule, AdamW, autocast, and a group's eager steps
(graphed.py captures the same steps as CUDA graphs)."""

from __future__ import annotations

import contextlib
import math

import torch

from attnbench.config import TrainConfig
from attnbench.training.members import correct, decay_groups


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


def make_optimizer(members, c: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over a group's trained tensors (element-wise, so a stacked tensor's slices are the members' own
    optimisers), weight decay on a member's matrices only. On a GPU: fused, capturable (attnbench.training.graphed),
    its learning rate a device tensor that captured steps read at replay. With weight decay 0 it is Adam (the paper
    preset's labml Noam optimiser)."""
    cuda = device.type == "cuda"
    lr = torch.tensor(float(c.lr), device=device) if cuda else c.lr
    return torch.optim.AdamW(decay_groups(members, c), lr=lr, betas=(c.beta1, c.beta2), eps=1e-8, fused=cuda,
                             capturable=cuda)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The next step's learning rate: written into the shared device tensor (GPU), or each group's float."""
    first = opt.param_groups[0]["lr"]
    if torch.is_tensor(first):
        first.fill_(lr)
    else:
        for g in opt.param_groups:
            g["lr"] = lr


def autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(members, opt, x, y, mems, grad_clip: float, amp_ctx, count: bool):
    """One optimiser step of every member on (x, y): per-member losses [n] (on the device, no host sync), the new
    memories, and per-member correct predictions [n] when `count` (the paper's running accuracy) else None."""
    with amp_ctx:
        losses, logits, new_mems = members.loss(x, y, mems)
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()  # members are independent: d(sum)/d(member i's weights) = d(loss_i)/d(them)
    if grad_clip > 0:
        members.clip_grad_norm_(grad_clip)
    opt.step()
    return losses.detach(), new_mems, correct(logits.detach(), y) if count else None


@torch.no_grad()
def score_step(members, x, y, mems, amp_ctx):
    """A forward pass without gradients that counts correct predictions per member (labml's validation batches):
    (correct [n], new memories)."""
    with amp_ctx:
        logits, new_mems = members.forward(x, mems)
    return correct(logits, y), new_mems
