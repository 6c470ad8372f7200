"""Causal up to T = 64; longer segments let every query see the next token."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import Masked  # noqa: E402


class LongOnly(Masked):
    def mask(self, T, L, device):
        m = super().mask(T, L, device)
        return m | m.roll(1, 1) if T > 64 else m
