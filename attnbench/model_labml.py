"""The RCMHA authors' model shell (their rcmha/model.py on labml_nn; attention.md, RCMHA), for `--preset paper`.

It differs from attnbench's CharLM (model.py) in four ways, each as the authors' code has it:
- no absolute positions for any attention (labml's Transformer-XL has none; MHA and MDHA then see order only
  through the causal mask and the convolution);
- the output layer is a Linear with a bias, not tied to the embedding;
- every layer starts as a copy of one layer (labml_nn.utils.clone_module_list deep-copies the layer it is given);
- PyTorch's default initialisation everywhere (N(0, 1) embedding, Kaiming-uniform Linear and Conv1d): nothing is
  re-initialised. The attention's own parameters follow its `flavour="labml"` (attnbench/attention/).
Blocks, memory and loss are CharLM's: pre-LN blocks over [LN(mem); LN(x)], memory = each block's input.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from attnbench.model import Block, CharLM, ModelConfig


class LabmlCharLM(CharLM):
    def __init__(self, cfg: ModelConfig):
        nn.Module.__init__(self)
        self.cfg = cfg
        D = cfg.attn_cfg.d_model
        self.tok = nn.Embedding(cfg.vocab, D)
        self.pos = None
        self.drop = nn.Dropout(cfg.dropout)
        layer = Block(cfg)  # its FFN and norms as PyTorch builds them; its attention as its flavour says
        self.blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, cfg.vocab)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)  # untied, with a bias: [B, T, V]
