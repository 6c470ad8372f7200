"""Pieces shared by several attentions: the attention kernel (reference and fused), the causal depth-wise
convolution, the sinusoid and the Transformer-XL relative shift. Shapes: B batch, T queries, M memory,
L = M + T keys, nh heads, hs head width, C channels."""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(T: int, M: int, device) -> torch.Tensor:
    """[T, L] bool, True where query i (absolute position M + i) may see key j: j <= M + i."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(M + T, device=device)[None, :]
    return j <= i + M


def attend_reference(q, k, v, scale: float, dropout: float = 0.0, training: bool = False, bias=None):
    """softmax(q·kᵀ·scale + bias + causal mask)·v, written out (attention.md, MHA). q [B,nh,T,hs], k/v [B,nh,L,hs]."""
    T, L = q.shape[-2], k.shape[-2]
    att = torch.einsum("bhid,bhjd->bhij", q, k) * scale  # [B, nh, T, L]
    if bias is not None:
        att = att + bias
    att = att.masked_fill(~causal_mask(T, L - T, q.device), float("-inf"))
    att = F.dropout(att.softmax(dim=-1), dropout, training)
    return torch.einsum("bhij,bhjd->bhid", att, v)


def attend_fast(q, k, v, scale: float, dropout: float = 0.0, training: bool = False, enable_gqa: bool = False):
    """The same function through scaled_dot_product_attention (flash / memory-efficient kernels on GPU).

    Without memory the kernel's own causal mask applies; with memory (L > T) SDPA's is_causal would align the
    mask top-left, so an explicit bottom-right boolean mask is passed."""
    from attnbench.kernels import batched

    T, L = q.shape[-2], k.shape[-2]
    stacked = False
    if q.is_cuda:
        stacked = batched(q, "scaled_dot_product_attention (stacked): flash or math kernel (the memory-efficient "
                             "kernel's batching rule fails)")
    elif batched(q, "scaled_dot_product_attention on CPU (no batching rule): written out"):
        if enable_gqa:  # each K/V head serves q.shape[1] / k.shape[1] query heads
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        return attend_reference(q, k, v, scale, dropout, training)
    kw = dict(dropout_p=dropout if training else 0.0, scale=scale)
    if enable_gqa:
        kw["enable_gqa"] = True  # K/V heads shared by groups of query heads (torch >= 2.5)
    with _stacked_backends() if stacked else contextlib.nullcontext():
        if L == T:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, L - T, q.device), **kw)


def _stacked_backends():
    """Inside torch.func.vmap (a stacked training group) on a GPU: SDPA's flash kernel, else its math path. The
    memory-efficient kernel's batching rule raised "LSE is not correctly aligned (strideH)" on an H200 (torch 2.11;
    float32, or a boolean mask: the paper preset's memory), which the flash kernel's and the decomposed math path's
    do not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


def attend(impl: str, q, k, v, scale: float, dropout: float, training: bool):
    fn = attend_reference if impl == "reference" else attend_fast
    return fn(q, k, v, scale, dropout, training)


def fused_linear(x: torch.Tensor, layers: Sequence[nn.Linear]) -> torch.Tensor:
    """x through several nn.Linear of one input as one GEMM on their concatenated weights: [..., Σ out]."""
    w = torch.cat([m.weight for m in layers])  # [Σ out, D]
    b = None
    if any(m.bias is not None for m in layers):  # zeros for a layer without one (labml: V biased, Q and K not)
        b = torch.cat([w.new_zeros(m.out_features) if m.bias is None else m.bias for m in layers])
    return F.linear(x, w, b)


def project_qkv(x: torch.Tensor, h: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear, fused: bool = True):
    """q(x), k(h), v(h): [B, T, Cq], [B, L, Ck], [B, L, Cv]. Without memory (h is x) and `fused`: one GEMM on the
    concatenated weights, split into views, as fast MHA implementations do (nanoGPT's c_attn); the same values."""
    if not fused or h is not x:
        return q(x), k(h), v(h)
    return fused_linear(x, (q, k, v)).split([q.out_features, k.out_features, v.out_features], dim=-1)


def convolved_qkv(m: nn.Module, h: torch.Tensor, impl: str) -> tuple[torch.Tensor, ...]:
    """MDHA's and RCMHA's Q, K, V over h [B, L, D]: each projection, then its causal depth-wise convolution
    (attention.md, MDHA). reference: written out per Q, K, V; fast: one GEMM for Q|K|V and one convolution over its
    3C channels, which hands back q, k, v as three contiguous [B, L, C] tensors (unit last stride for SDPA)."""
    if impl == "reference":
        return m.q_conv(m.q(h), "reference"), m.k_conv(m.k(h), "reference"), m.v_conv(m.v(h), "reference")
    w = torch.cat([m.q_conv.weight, m.k_conv.weight, m.v_conv.weight])  # [3C, W]
    return causal_conv_parts(fused_linear(h, (m.q, m.k, m.v)), w, 3)


def split_heads(x: torch.Tensor, nh: int) -> torch.Tensor:
    B, L, C = x.shape
    return x.view(B, L, nh, C // nh).transpose(1, 2)  # [B, nh, L, hs]


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(B, T, nh * hs)  # [B, T, C]


def with_memory(x: torch.Tensor, mem: torch.Tensor | None) -> torch.Tensor:
    """[mem; x] along time: [B, M+T, D] (Transformer-XL §3.2); mem is detached by the caller."""
    return x if mem is None or mem.shape[1] == 0 else torch.cat([mem.to(x.dtype), x], dim=1)


class CausalDepthwiseConv(nn.Module):
    """Primer's causal depth-wise convolution along time (attention.md, MDHA; So et al. 2021, §2 "Multi-DConv-Head
    Attention"): y[t] = Σ_k w_k ⊙ x[t−k], k = 0..width−1, zero before the start. One kernel per channel, no bias,
    Primer's initialisation w0 = 0.5, w_k = 0.5/width for k >= 1."""

    def __init__(self, channels: int, width: int = 3):
        super().__init__()
        self.width = width
        w = torch.full((channels, width), 0.5 / width)
        w[:, 0] = 0.5
        self.weight = nn.Parameter(w)  # weight[c, k] multiplies x[t-k, c]

    def forward(self, x: torch.Tensor, impl: str = "fast") -> torch.Tensor:
        return (self.reference if impl == "reference" else self.fast)(x)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C]: the sum of shifted copies, written out."""
        y = torch.zeros_like(x)
        for k in range(self.width):
            shifted = F.pad(x, (0, 0, k, 0))[:, : x.shape[1]]  # shifted[:, t] = x[:, t-k], zero for t < k
            y = y + self.weight[:, k] * shifted
        return y

    def fast(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv_parts(x, self.weight)[0]


class HeadSharedConv(nn.Module):
    """The RCMHA authors' convolution (labml's SpatialDepthWiseConvolution, Primer EZ; attention.md, RCMHA): one
    causal width-W kernel per channel of a head, shared by every head, with a bias, PyTorch's Conv1d initialisation:
    y[t, h·d + j] = b[j] + Σ_k w[j, k] · x[t − (W−1) + k, h·d + j], zero before the start.
    Kept as an nn.Conv1d (weight [d, 1, W], bias [d]) so that its parameters are the authors'."""

    def __init__(self, head_dim: int, n_heads: int, width: int = 3):
        super().__init__()
        self.n_heads, self.width = n_heads, width
        self.conv = nn.Conv1d(head_dim, head_dim, width, groups=head_dim)

    def per_channel(self) -> torch.Tensor:
        """The kernel in CausalDepthwiseConv's layout over all n·d channels: [C, W], column k multiplies x[t−k]."""
        return self.conv.weight[:, 0].flip(-1).repeat(self.n_heads, 1)

    def forward(self, x: torch.Tensor, impl: str = "fast") -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        bias = self.conv.bias.repeat(self.n_heads).to(x.dtype)
        if impl != "reference":
            return causal_conv_parts(x, self.per_channel())[0] + bias
        w = self.per_channel()
        y = torch.zeros_like(x)
        for k in range(self.width):  # the sum of shifted copies, written out
            y = y + w[:, k].to(x.dtype) * F.pad(x, (0, 0, k, 0))[:, : x.shape[1]]
        return y + bias

    @staticmethod
    def count(head_dim: int, width: int) -> int:
        return head_dim * width + head_dim


def labml_convolved_qkv(m: nn.Module, x: torch.Tensor, h: torch.Tensor, impl: str) -> tuple[torch.Tensor, ...]:
    """The authors' Q, K, V (their RelativeMultiHeadAttention, labml's MultiDConvHeadAttention): each projection and
    then its HeadSharedConv, the query over the current segment x only, keys and values over h = [mem; x]."""
    return m.q_conv(m.q(x), impl), m.k_conv(m.k(h), impl), m.v_conv(m.v(h), impl)


def causal_conv_parts(x: torch.Tensor, weight: torch.Tensor, parts: int = 1) -> tuple[torch.Tensor, ...]:
    """CausalDepthwiseConv's convolution with weight [C, W] over x [B, L, C], split along channels into `parts`
    contiguous [B, L, C/parts] tensors (MDHA's fused Q|K|V: one launch, and SDPA gets contiguous heads).

    On CUDA with triton (or under TRITON_INTERPRET=1): attnbench.kernels.causal_conv, one pass over [B, L, C] (an
    H100, B=4, L=4096, C=1024, bf16, fwd+bwd: cuDNN conv1d 1.02 ms against a ~0.07 ms floor). Elsewhere one grouped
    conv1d with left padding only (symmetric padding would leak x[t+1])."""
    from attnbench.kernels import batched
    from attnbench.kernels import causal_conv as kernel

    C, W = weight.shape
    fits = W <= kernel.MAX_WIDTH and parts <= kernel.MAX_PARTS
    if fits and kernel.available(x) and (x.dtype in (torch.float16, torch.bfloat16, torch.float32) or not x.is_cuda) \
            and not batched(x, "causal_conv (Triton): grouped conv1d"):
        return kernel.causal_conv_parts(x, weight, parts)
    w = weight.flip(-1).unsqueeze(1).to(x.dtype)  # [C, 1, W]; conv1d correlates, so flip
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), w, groups=C).transpose(1, 2)  # [B, L, C]
    # contiguous: a transposed view would give the heads a last-dim stride != 1, and SDPA then silently
    # falls back to its O(T²) math kernel (measured on an H100: 25x slower, out of memory at T=16384)
    return tuple(part.contiguous() for part in y.split(C // parts, dim=-1))


def sinusoid_freqs(d_pos: int, device=None) -> torch.Tensor:
    """ω_k = 1/10000^(2k/d_R), k = 0..d_R/2−1 (Transformer-XL §3.3; attention.md, RMHA)."""
    return 1.0 / (10000.0 ** (torch.arange(0, d_pos, 2, device=device, dtype=torch.float64) / d_pos))


def sinusoid(positions: torch.Tensor, d_pos: int) -> torch.Tensor:
    """R[p] = [sin(p·ω); cos(p·ω)] for each p in `positions` -> [len, d_R], float64 angles."""
    ang = positions.to(torch.float64)[:, None] * sinusoid_freqs(d_pos, positions.device)[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's relative shift (`_rel_shift` in its code; attention.md, RMHA).

    x [B, nh, T, L] holds, in column c, the score against distance L−1−c. Pad one zero column on the left, view as
    [L+1, T], drop the first row, view back: afterwards x[..., i, j] holds distance (M + i) − j for j <= M + i
    (M = L − T); entries above the causal diagonal are garbage and must be masked."""
    B, nh, T, L = x.shape
    xp = F.pad(x, (1, 0))  # [B, nh, T, L+1]
    xp = xp.view(B, nh, L + 1, T)[:, :, 1:]  # [B, nh, L, T]
    return xp.reshape(B, nh, T, L)


def init_linear(*layers: nn.Linear) -> None:
    for layer in layers:
        nn.init.normal_(layer.weight, std=0.02)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def scale_for(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


QKVO_PARTS = {"qkv": ("q", "k", "v"), "out": ("o",)}  # param_parts of the attentions with q, k, v, o projections


def saved_activations(cfg, batch: int, seq_len: int, dtype_bytes: int, heads: int | None = None,
                      kv_heads: int | None = None) -> dict[str, int]:
    """Bytes an MHA-shaped forward keeps for backward, by the tensors autograd saves (inputs and weights excluded;
    attention.md, MHA): the Q/K/V projections (B·T·h·d each, K/V with their own head count), the attention output
    fed to W_o (B·T·n·d) and the module output (B·T·D); the fused kernel adds its log-sum-exp (B·n·T, fp32), the
    reference path the softmax probabilities (B·n·T²). A rough figure: implementations may keep more or less."""
    B, T, d = batch, seq_len, cfg.head_dim
    n = heads or cfg.n_heads
    kv = kv_heads or n
    parts = {"q,k,v": B * T * (n + 2 * kv) * d * dtype_bytes, "attn out": B * T * n * d * dtype_bytes,
             "module out": B * T * cfg.d_model * dtype_bytes}
    if cfg.impl == "reference":
        parts["probs B*n*T^2"] = B * n * T * T * dtype_bytes
    else:
        parts["lse"] = 4 * B * n * T
    return parts
