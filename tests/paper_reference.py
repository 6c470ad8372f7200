"""An independent, slow rebuild of the RCMHA authors' model (github hermansh-id/rcmha on labml_nn 0.4.135 and
labml_helpers 0.4.89), written here from its definition for tests of the `paper` preset (issue 12). Nothing here is
attnbench code; it follows the authors' conventions instead: sequence-first tensors [S, B, ...], a boolean mask
[S, L, 1] that is 1 where query i may see key j, scores laid out as [i, j, batch, head], softmax over j.

Definitions rebuilt (attention.md, RCMHA; the authors' rcmha/attention.py and rcmha/model.py, labml_nn's
transformers/mha.py, primer_ez/__init__.py, xl/relative_mha.py and feed_forward.py):
- the projection of each of Q, K, V is a Linear D -> heads·d_k viewed as [S, B, heads, d_k]; labml's plain MHA
  gives all three a bias, the relative one gives only V a bias; the output Linear always has one;
- the "spatial depth-wise convolution" is one Conv1d over the d_k channels of a head (groups = d_k, so one
  width-3 kernel per channel, shared by every head and batch row) with a bias, padded by 2 on both sides and cut
  back to the first S outputs, which makes it causal: out[t] = b + w2·x[t] + w1·x[t−1] + w0·x[t−2];
  the query is convolved over the current segment only, keys and values over [memory; segment];
- relative scoring with learned tables: P of [2·R, heads, d_k], S of [2·R, heads] (R = 4096 in the authors' code),
  u of [heads, d_k]; with K keys and Q queries the rows R − K … R + Q − 1 are taken, and
      scores = (q + u)·k + shift(q·P_rows + S_rows)[:, −K:]
  where shift pads one zero column after the last column, reinterprets the [Q, K+Q+1] block as [K+Q+1, Q],
  drops the last row and reinterprets back (the authors' util.shift_right); then everything is scaled by 1/√d_k;
- a layer is pre-LN: z = LN1(x); the attention reads query z and key/value [LN1(mem); z]; x + attn; x + FFN(LN2(x)),
  FFN = Linear(D, d_ff) -> ReLU -> Linear(d_ff, D), both with biases;
- the model: token embedding (no positions), the layers (deep copies of ONE layer, so they start equal), a final
  LayerNorm, an output Linear with a bias (not tied); each layer's memory is its input x of the segment, merged
  into the running memory and cut to the last mem_len positions.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class RefConv(nn.Module):
    def __init__(self, d_k: int, width: int = 3):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(d_k, d_k, width, padding=width - 1, groups=d_k)

    def forward(self, x):  # [S, B, H, dk]
        S, B, H, dk = x.shape
        y = self.conv(x.permute(1, 2, 3, 0).reshape(B * H, dk, S))[:, :, :S]  # causal: keep the first S outputs
        return y.reshape(B, H, dk, S).permute(3, 0, 1, 2)


def ref_shift(x):
    """The authors' shift_right on [Q, J, ...]."""
    Q, J = x.shape[0], x.shape[1]
    padded = torch.cat([x, x.new_zeros(Q, 1, *x.shape[2:])], dim=1)  # [Q, J+1, ...]
    return padded.reshape(J + 1, Q, *x.shape[2:])[:-1].reshape(x.shape)


class RefAttention(nn.Module):
    def __init__(self, heads: int, d_model: int, relative: bool, conv: bool, rel_rows: int = 4096):
        super().__init__()
        self.h, self.dk, self.relative, self.R = heads, d_model // heads, relative, rel_rows
        qk_bias = not relative
        self.q = nn.Linear(d_model, d_model, bias=qk_bias)
        self.k = nn.Linear(d_model, d_model, bias=qk_bias)
        self.v = nn.Linear(d_model, d_model, bias=True)
        self.o = nn.Linear(d_model, d_model, bias=True)
        self.convs = nn.ModuleList(RefConv(self.dk) for _ in range(3)) if conv else None
        if relative:
            self.P = nn.Parameter(torch.zeros(2 * rel_rows, heads, self.dk))
            self.S = nn.Parameter(torch.zeros(2 * rel_rows, heads))
            self.u = nn.Parameter(torch.zeros(heads, self.dk))

    def _heads(self, i: int, lin: nn.Linear, x):
        y = lin(x).view(*x.shape[:-1], self.h, self.dk)
        return self.convs[i](y) if self.convs is not None else y

    def forward(self, query, key, mask):  # query [Q, B, D], key = value [K, B, D], mask [Q, K, 1]
        q, k, v = self._heads(0, self.q, query), self._heads(1, self.k, key), self._heads(2, self.v, key)
        Q, K = q.shape[0], k.shape[0]
        if self.relative:
            rows = slice(self.R - K, self.R + Q)
            ac = torch.einsum("ibhd,jbhd->ijbh", q + self.u[None, None], k)
            b = torch.einsum("ibhd,jhd->ijbh", q, self.P[rows])
            d = self.S[rows][None, :, None, :]
            scores = ac + ref_shift(b + d)[:, -K:]
        else:
            scores = torch.einsum("ibhd,jbhd->ijbh", q, k)
        scores = scores / math.sqrt(self.dk)
        scores = scores.masked_fill(mask.unsqueeze(-1) == 0, float("-inf"))
        att = scores.softmax(dim=1)
        x = torch.einsum("ijbh,jbhd->ibhd", att, v).reshape(Q, q.shape[1], -1)
        return self.o(x)


class RefLayer(nn.Module):
    def __init__(self, attn: RefAttention, d_model: int, d_ff: int):
        super().__init__()
        self.attn = attn
        self.ln_att, self.ln_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff1, self.ff2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x, mem, mask):
        z = self.ln_att(x)
        kv = z if mem is None else torch.cat([self.ln_att(mem), z], dim=0)
        x = x + self.attn(z, kv, mask)
        return x + self.ff2(torch.relu(self.ff1(self.ln_ff(x))))


class RefModel(nn.Module):
    def __init__(self, vocab: int, d_model: int, heads: int, d_ff: int, n_layers: int, relative: bool, conv: bool,
                 rel_rows: int = 4096):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = RefLayer(RefAttention(heads, d_model, relative, conv, rel_rows), d_model, d_ff)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.generator = nn.Linear(d_model, vocab)

    def forward(self, idx, mems):  # idx [S, B]; mems: list per layer of [M, B, D] or None
        S = idx.shape[0]
        M = 0 if mems is None else mems[0].shape[0]
        mask = torch.cat([torch.ones(S, M, 1), torch.tril(torch.ones(S, S)).unsqueeze(-1)], dim=1).bool()
        x = self.embed(idx)
        new = []
        for i, layer in enumerate(self.layers):
            new.append(x.detach())
            x = layer(x, None if mems is None else mems[i], mask)
        return self.generator(self.norm(x)), new


def merge_memory(old, new, mem_len: int):
    """The authors' Configs.merge_memory: concatenate along time, keep the last mem_len positions."""
    mem = new if not old else [torch.cat([m, x], dim=0) for m, x in zip(old, new)]
    return [m[-mem_len:] for m in mem] if mem[0].shape[0] > mem_len else mem
