"""Memory-efficient blocked PyTorch path (the CPU default), differentiable through autograd.

Queries are cut into blocks of ``block`` rows; block ``b`` reads the keys
``[b*block - left, b*block + block - 1 + right]`` through a strided view of the padded keys
(no copy of K/V per block), plus the ``G`` global keys. Scores are
``(N/block) x block x (block + left + right + G)``: O(N * (window + G)) memory instead of N^2.
Global query rows (``i < G``) are a separate dense pass over all keys: O(G * N).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _safe_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim in fp32 where all-(-inf) rows give zeros instead of NaN."""
    scores = scores.float()
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max).detach()
    p = torch.exp(scores - row_max)
    denom = p.sum(dim=-1, keepdim=True)
    return p / torch.where(denom == 0, torch.ones_like(denom), denom)


def _pick_block(left: int, right: int, seqlen: int) -> int:
    # A block about as wide as the window keeps the wasted band corners near 1/3 of the work.
    block = max(64, min(512, 1 << max(left + right, 1).bit_length() - 1))
    return min(block, max(seqlen, 1))


def blocked_sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    left: int,
    right: int,
    num_global: int,
    key_padding_mask: Optional[torch.Tensor],
    softmax_scale: float,
    block: Optional[int] = None,
) -> torch.Tensor:
    """q, k, v: (B, H, N, D) with left, right already clamped to [0, N-1]. Returns (B, H, N, D)."""
    bsz, heads, n, d = q.shape
    G = num_global
    blk = block or _pick_block(left, right, n)
    nb = -(-n // blk)
    n_pad = nb * blk
    span = blk + left + right                                       # keys seen by one query block

    # ---- band part: every query block against its key span --------------------------------
    q_pad = F.pad(q, (0, 0, 0, n_pad - n)).view(bsz, heads, nb, blk, d)           # (B,H,nb,blk,D)
    # keys padded by `left` in front so block b's span starts at padded index b*blk
    k_pad = F.pad(k, (0, 0, left, n_pad - n + right))
    v_pad = F.pad(v, (0, 0, left, n_pad - n + right))
    k_span = k_pad.unfold(2, span, blk)                                            # (B,H,nb,D,span)
    v_span = v_pad.unfold(2, span, blk).transpose(-1, -2)                          # (B,H,nb,span,D)
    scores = torch.matmul(q_pad, k_span) * softmax_scale                           # (B,H,nb,blk,span)

    i = torch.arange(n_pad, device=q.device).view(nb, blk, 1)                      # query index
    j = (torch.arange(nb, device=q.device).view(nb, 1, 1) * blk - left
         + torch.arange(span, device=q.device).view(1, 1, span))                   # key index
    # keys < G are taken by the global part below, so the band skips them (no double count)
    band = (j >= i - left) & (j <= i + right) & (j >= G) & (j < n)                 # (nb,blk,span)
    band = band.expand(bsz, 1, nb, blk, span)
    if key_padding_mask is not None:
        kvalid = F.pad(key_padding_mask, (left, n_pad - n + right), value=False)
        band = band & kvalid.unfold(1, span, blk)[:, None, :, None, :]             # (B,1,nb,blk,span)
    scores = scores.masked_fill(~band, float("-inf"))

    if G > 0:
        g_scores = torch.matmul(q_pad, k[:, :, None, :G].transpose(-1, -2)) * softmax_scale
        if key_padding_mask is not None:                                           # (B,H,nb,blk,G)
            g_valid = key_padding_mask[:, None, None, None, :G]
            g_scores = g_scores.masked_fill(~g_valid, float("-inf"))
        p = _safe_softmax(torch.cat([g_scores, scores], dim=-1))
        p_g, p_band = p[..., :G], p[..., G:]
        out = torch.matmul(p_band.to(v.dtype), v_span) + torch.matmul(p_g.to(v.dtype), v[:, :, None, :G])
    else:
        out = torch.matmul(_safe_softmax(scores).to(v.dtype), v_span)
    out = out.reshape(bsz, heads, n_pad, d)[:, :, :n]

    # ---- global query rows: dense over all keys ---------------------------------------------
    if G > 0:
        g_rows = torch.matmul(q[:, :, :G], k.transpose(-1, -2)) * softmax_scale     # (B,H,G,N)
        if key_padding_mask is not None:
            g_rows = g_rows.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
        g_out = torch.matmul(_safe_softmax(g_rows).to(v.dtype), v)
        out = torch.cat([g_out, out[:, :, G:]], dim=2)

    if key_padding_mask is not None:
        out = out.masked_fill(~key_padding_mask[:, None, :, None], 0.0)
    return out
