"""Causal, but with malformed optional members (docs/contract.md): each class is refused at load, naming it."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import Masked  # noqa: E402


class BadClosedForm(Masked):
    @staticmethod
    def closed_form(cfg):
        return {"total": 4 * cfg.d_model * cfg.d_model}  # params reads qkv, out, other


class BadSettings(Masked):
    settings = ("window",)  # not an AttnConfig field


class BadParamParts(Masked):
    param_parts = {"qkv": "qkv", "out": ("out",)}  # a bare string: its letters would be read as prefixes
