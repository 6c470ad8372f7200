"""Right without memory; with memory every query also sees the next token."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import Masked  # noqa: E402


class MemoryOnly(Masked):
    def mask(self, T, L, device):
        m = super().mask(T, L, device)
        return m if L == T else m | m.roll(1, 1)
