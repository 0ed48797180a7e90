"""Dense fp32 reference for cross-attention with per-query key ranges (tests only: it builds
the full ``(Nq, Nk)`` mask)."""
from __future__ import annotations

import torch


def cross_attention_mask(key_start: torch.Tensor, key_end: torch.Tensor, num_keys: int) -> torch.Tensor:
    """``(B, Nq)`` ranges -> ``(B, 1, Nq, Nk)`` bool, True where ``key_start <= j < key_end``."""
    j = torch.arange(num_keys, device=key_start.device)
    return ((j >= key_start[..., None]) & (j < key_end[..., None]))[:, None]


def naive_cross_attention(q, k, v, key_start, key_end, softmax_scale: float) -> torch.Tensor:
    """fp32 masked softmax(q k^T * scale) v; rows with an empty range are zeros. Returns q's dtype."""
    allowed = cross_attention_mask(key_start, key_end, k.shape[-2])            # (B, 1, Nq, Nk)
    s = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * softmax_scale
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)                               # empty rows: 0, not NaN
    return torch.einsum("bhqk,bhkd->bhqd", p, v.float()).to(q.dtype)
