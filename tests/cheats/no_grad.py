"""A leak that carries no gradient: each output gets the next token's input, detached (and shifted back by one):
the gradient test sees nothing, the perturbation test sees it."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _base import Masked  # noqa: E402


class NoGrad(Masked):
    def forward(self, x, mem=None):
        nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], 1).detach()
        return super().forward(x, mem) + 0.1 * nxt
