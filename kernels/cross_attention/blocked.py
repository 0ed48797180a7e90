"""PyTorch path (the CPU default), differentiable through autograd.

Queries are cut into blocks of ``block`` rows; a block reads only the keys between the lowest
``key_start`` and the highest ``key_end`` of its rows (over the batch), and runs PyTorch's
fused ``scaled_dot_product_attention`` with a boolean mask over that slice. Memory is
O(block * span) per block. Rows with an empty range attend one zero "sink" key: their output
is exactly zero and their gradients stay finite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def blocked_cross_attention(q, k, v, key_start, key_end, softmax_scale: float, block: int = 256) -> torch.Tensor:
    """q (B, H, Nq, D), k/v (B, H, Nk, D), key_start/key_end (B, Nq) -> (B, H, Nq, D)."""
    nq, nk = q.shape[-2], k.shape[-2]
    nonempty = key_start < key_end                                             # (B, Nq)
    lo_all = torch.where(nonempty, key_start, nk)
    hi_all = torch.where(nonempty, key_end, 0)
    outs = []
    for s in range(0, nq, block):
        e = min(s + block, nq)
        lo, hi = int(lo_all[:, s:e].min()), int(hi_all[:, s:e].max())
        qb = q[:, :, s:e]
        if hi <= lo:
            outs.append(qb * 0.0)                # no keys: zeros, still part of the graph
            continue
        j = torch.arange(lo, hi, device=q.device)
        allowed = (j >= key_start[:, s:e, None]) & (j < key_end[:, s:e, None])  # (B, L, S)
        empty = ~allowed.any(-1, keepdim=True)                                 # (B, L, 1)
        kb, vb = k[:, :, lo:hi], v[:, :, lo:hi]
        if bool(empty.any()):
            sink = kb.new_zeros(kb.shape[:-2] + (1, kb.shape[-1]))
            kb, vb = torch.cat([kb, sink], dim=-2), torch.cat([vb, sink], dim=-2)
            allowed = torch.cat([allowed, empty], dim=-1)
        outs.append(F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed[:, None], scale=softmax_scale))
    return torch.cat(outs, dim=2)
