"""Dense fp32 reference for sliding-window + global attention.

Short on purpose: tests, benchmarks and debugging all import it. It builds the full
``(seqlen, seqlen)`` mask, so it is O(seqlen^2) in memory: never use it on long inputs.
"""
from __future__ import annotations

from typing import Optional

import torch


def attention_mask(
    seqlen: int,
    left: int,
    right: int,
    num_global: int,
    key_padding_mask: Optional[torch.Tensor] = None,
    device=None,
    *,
    num_global_queries: Optional[int] = None,
) -> torch.Tensor:
    """Boolean mask of allowed (query, key) pairs, True = attend.

    Returns ``(seqlen, seqlen)`` without padding, ``(batch, 1, seqlen, seqlen)`` with it.
    query ``i`` attends key ``j`` iff the key is real, the query is real, and
    ``i - left <= j <= i + right`` or ``j < num_global`` or ``i < num_global_queries``
    (``num_global_queries`` defaults to ``num_global``).
    """
    gq = num_global if num_global_queries is None else num_global_queries
    i = torch.arange(seqlen, device=device)[:, None]
    j = torch.arange(seqlen, device=device)[None, :]
    allowed = ((j >= i - left) & (j <= i + right)) | (j < num_global) | (i < gq)
    if key_padding_mask is None:
        return allowed
    valid = key_padding_mask.to(device=allowed.device, dtype=torch.bool)  # (B, N)
    return allowed[None, None] & valid[:, None, None, :] & valid[:, None, :, None]


def naive_sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window,
    num_global: int = 0,
    key_padding_mask: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    upcast: bool = True,
    *,
    num_global_queries: Optional[int] = None,
) -> torch.Tensor:
    """Dense masked softmax attention. q, k, v: (B, H, N, D). Returns (B, H, N, D) in q's dtype.

    The mask is :func:`attention_mask` (``num_global_queries=None`` means ``num_global``).
    ``upcast=True`` computes in fp32 (the reference); ``upcast=False`` computes in the input
    dtype (the same-dtype PyTorch baseline that kernel tolerances are measured against).
    Rows with no allowed key (padded queries included) are zeros.
    """
    left, right = (window, window) if isinstance(window, int) else window
    n, d = q.shape[-2], q.shape[-1]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    dtype = torch.float32 if upcast else q.dtype
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    allowed = attention_mask(n, left, right, num_global, key_padding_mask, device=q.device,
                             num_global_queries=num_global_queries)
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale            # (B, H, N, N)
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    p = torch.exp(scores - row_max)
    denom = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.matmul(p, vc).to(q.dtype)
