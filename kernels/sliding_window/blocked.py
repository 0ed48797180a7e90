"""Memory-efficient blocked PyTorch path (the CPU default), differentiable through autograd.

Queries are cut into blocks of ``block`` rows; block ``b`` reads the keys
``[b*block - left, b*block + block - 1 + right]`` through a strided view of the padded keys,
plus the ``G`` global keys in front. Each block group runs through PyTorch's fused
``scaled_dot_product_attention`` with a boolean mask of shape ``(blocks, block, G + span)``,
so memory is O(N * (window + G)) (the mask, in bytes) instead of N^2, and no score matrix is
materialised by the fused kernel. Every row goes through this band pass, key-only global rows
(``GQ <= i < G``) included: they see exactly the global keys and their band. Only the full
query rows (``i < GQ``, ``GQ`` = num_global_queries) are a separate dense pass over all keys:
O(GQ * N); blocks made only of such rows skip the band pass.

Rows with no allowed key get one extra "sink" key (k = 0, v = 0) that only they may attend:
their output is exactly zero and their gradients stay finite.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# under no_grad, block groups are sized so one group's K/V copies stay near this many elements
_GROUP_ELEMENTS = 1 << 26


def _pick_block(left: int, right: int, seqlen: int) -> int:
    # a block of about a quarter of the band: its keys span block + left + right, so about 1/5 of
    # the scores lie outside the band, against 1/2 for a block as wide as the band; below 32 rows
    # the per-block overhead wins (window 128 + 128 on a 2-core CPU, bf16, 32k tokens: 64 rows
    # run the band pass about 1.3x faster than 256, forward and backward)
    block = max(32, min(256, (1 << max(left + right, 1).bit_length() - 1) // 4))
    return min(block, max(seqlen, 1))


def _attend(q, k, v, allowed, scale):
    """SDPA with a boolean mask; rows with no allowed key attend only a zero sink key.
    q: (B, H, g, L, D), k/v: (B, H, g, S, D), allowed: (B or 1, 1, g, L, S).

    Block groups are folded into the batch so SDPA sees 4-D inputs: its fused CPU kernel only
    takes 4-D, and 5-D inputs fall back to a path that materialises every score."""
    empty = ~allowed.any(dim=-1, keepdim=True)                                    # (., 1, g, L, 1)
    if bool(empty.any()):
        k = torch.cat([k, k.new_zeros(k.shape[:-2] + (1, k.shape[-1]))], dim=-2)
        v = torch.cat([v, v.new_zeros(v.shape[:-2] + (1, v.shape[-1]))], dim=-2)
        allowed = torch.cat([allowed, empty], dim=-1)
    bsz, heads, g = q.shape[:3]
    fold = lambda t: t.transpose(1, 2).reshape(bsz * g, heads, *t.shape[-2:])  # noqa: E731
    mask = allowed.expand(bsz, 1, g, *allowed.shape[-2:]).transpose(1, 2).reshape(bsz * g, 1, *allowed.shape[-2:])
    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=mask, scale=scale)
    return out.reshape(bsz, g, heads, *out.shape[-2:]).transpose(1, 2)          # (B, H, g, L, D)


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
    num_global_queries: Optional[int] = None,
) -> torch.Tensor:
    """q, k, v: (B, H, N, D) with left, right already clamped to [0, N-1]; query ``i`` sees every
    key when ``i < num_global_queries`` (None: ``num_global``). Returns (B, H, N, D)."""
    bsz, heads, n, d = q.shape
    G = num_global
    GQ = min(G if num_global_queries is None else num_global_queries, n)
    blk = block or _pick_block(left, right, n)
    nb = -(-n // blk)
    n_pad = nb * blk
    span = blk + left + right                                       # keys seen by one query block

    q_blocks = F.pad(q, (0, 0, 0, n_pad - n)).view(bsz, heads, nb, blk, d)       # (B,H,nb,blk,D)
    # keys padded by `left` in front so block b's span starts at padded index b*blk
    k_span = F.pad(k, (0, 0, left, n_pad - n + right)).unfold(2, span, blk).transpose(-1, -2)
    v_span = F.pad(v, (0, 0, left, n_pad - n + right)).unfold(2, span, blk).transpose(-1, -2)
    kvalid_span = None                                                           # (B,H,nb,span,D) views
    if key_padding_mask is not None:
        kvalid_span = F.pad(key_padding_mask, (left, n_pad - n + right), value=False).unfold(1, span, blk)

    group = nb
    if not torch.is_grad_enabled():
        group = max(1, min(nb, _GROUP_ELEMENTS // max(1, bsz * heads * (G + span) * d)))
    first = GQ // blk                          # blocks wholly made of full query rows skip the band pass
    outs = []
    for b0 in range(first, nb, group):
        b1 = min(nb, b0 + group)
        i = torch.arange(b0 * blk, b1 * blk, device=q.device).view(b1 - b0, blk, 1)          # query index
        j = (torch.arange(b0, b1, device=q.device).view(-1, 1, 1) * blk - left
             + torch.arange(span, device=q.device).view(1, 1, span))                         # key index
        # keys < G come from the global part, so the band skips them (no double count)
        allowed = ((j >= i - left) & (j <= i + right) & (j >= G) & (j < n))[None, None]      # (1,1,g,blk,span)
        if kvalid_span is not None:
            allowed = allowed & kvalid_span[:, None, b0:b1, None, :]                         # (B,1,g,blk,span)
        ks, vs = k_span[:, :, b0:b1], v_span[:, :, b0:b1]
        if G > 0:
            g_allowed = torch.ones(1, 1, 1, 1, G, dtype=torch.bool, device=q.device)
            if key_padding_mask is not None:
                g_allowed = key_padding_mask[:, None, None, None, :G]
            allowed = torch.cat([g_allowed.expand(*allowed.shape[:-1], G), allowed], dim=-1)
            gk = k[:, :, None, :G].expand(bsz, heads, b1 - b0, G, d)
            gv = v[:, :, None, :G].expand(bsz, heads, b1 - b0, G, d)
            ks, vs = torch.cat([gk, ks], dim=-2), torch.cat([gv, vs], dim=-2)
        outs.append(_attend(q_blocks[:, :, b0:b1], ks, vs, allowed, softmax_scale))
    out = (torch.cat(outs, dim=2).reshape(bsz, heads, n_pad - first * blk, d)[:, :, :n - first * blk] if outs
           else q.new_zeros(bsz, heads, 0, d))                                   # rows [first * blk, n)

    if GQ > 0:
        # full query rows: dense over all keys
        g_allowed = torch.ones(1, 1, 1, n, dtype=torch.bool, device=q.device)
        if key_padding_mask is not None:
            g_allowed = key_padding_mask[:, None, None, :]
        g_out = _attend(q[:, :, None, :GQ], k[:, :, None], v[:, :, None],
                        g_allowed[:, :, None].expand(g_allowed.shape[0], 1, 1, GQ, n), softmax_scale)[:, :, 0]
        out = torch.cat([g_out, out[:, :, GQ - first * blk:]], dim=2)

    if key_padding_mask is not None:
        out = out.masked_fill(~key_padding_mask[:, None, :, None], 0.0)
    return out
