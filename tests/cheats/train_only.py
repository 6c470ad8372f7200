"""Causal in evaluation mode; in training mode every query sees the next token."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import Masked  # noqa: E402


class TrainOnly(Masked):
    def mask(self, T, L, device):
        m = super().mask(T, L, device)
        return m | m.roll(1, 1) if self.training else m
