"""Forward Triton kernel: one program per (query block, batch*head).

A query block visits only the key blocks between the lowest ``key_start`` and the highest
``key_end`` of its rows (rows with an empty range do not widen it), masking each key per row
with ``key_start[i] <= j < key_end[i]``. Online softmax in base 2; the log2-sum-exp of each
row is saved for the backward (+inf for rows with no key, so their probabilities are 0).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sliding_window.fwd import dot_precision, online_softmax_step
from .utils import AUTOTUNE_KEY, FWD_CONFIGS


@triton.jit
def block_key_range(ks_base, ke_base, offs_m, NQ, NK, BLOCK_N: tl.constexpr):
    """Key ranges of the rows offs_m: per-row (ks, ke) and the block's [lo, hi) (lo a multiple of BLOCK_N)."""
    mask_m = offs_m < NQ
    ks = tl.load(ks_base + offs_m, mask=mask_m, other=0)
    ke = tl.load(ke_base + offs_m, mask=mask_m, other=0)
    nonempty = ks < ke
    lo = tl.min(tl.where(nonempty, ks, NK), 0)
    hi = tl.max(tl.where(nonempty, ke, 0), 0)
    return ks, ke, (lo // BLOCK_N) * BLOCK_N, hi


@triton.autotune(configs=FWD_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, KS, KE, qk_scale, NQ, NK, H,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    q_base = Q + pid_bh.to(tl.int64) * NQ * HEAD_DIM
    o_base = O + pid_bh.to(tl.int64) * NQ * HEAD_DIM
    k_base = K + pid_bh.to(tl.int64) * NK * HEAD_DIM
    v_base = V + pid_bh.to(tl.int64) * NK * HEAD_DIM
    r_base = (pid_bh // H).to(tl.int64) * NQ

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                             # (BM,)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < NQ
    mask_d = offs_d < HEAD_DIM
    q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)               # (BM, BD)
    ks, ke, lo, hi = block_key_range(KS + r_base, KE + r_base, offs_m, NQ, NK, BLOCK_N)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)                                  # (BN,)
        mask_n = offs_n < NK
        b_kT = tl.load(k_base + offs_n[None, :] * HEAD_DIM + offs_d[:, None],
                       mask=mask_n[None, :] & mask_d[:, None], other=0.0)        # (BD, BN)
        b_s = tl.dot(q, b_kT, input_precision=DOT_PRECISION) * qk_scale           # (BM, BN) log2 units
        allowed = (offs_n[None, :] >= ks[:, None]) & (offs_n[None, :] < ke[:, None]) & mask_n[None, :]
        b_s = tl.where(allowed, b_s, float("-inf"))
        b_v = tl.load(v_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
                      mask=mask_n[:, None] & mask_d[None, :], other=0.0)         # (BN, BD)
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, b_s, b_v, DOT_PRECISION)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    b_o = tl.where(empty[:, None], 0.0, acc / l_safe[:, None])
    b_lse = tl.where(empty, float("inf"), m_safe + tl.math.log2(l_safe))
    tl.store(o_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], b_o.to(O.dtype.element_ty),
             mask=mask_m[:, None] & mask_d[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * NQ + offs_m, b_lse, mask=mask_m)


def cross_attention_fwd(q, k, v, key_start, key_end, softmax_scale):
    """q (B, H, Nq, D), k/v (B, H, Nk, D) contiguous; key_start/key_end (B, Nq) int32.
    Returns out (B, H, Nq, D) in q's dtype and lse (B, H, Nq) fp32 in log2 units."""
    bsz, heads, nq, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((bsz, heads, nq), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
    _fwd_kernel[grid](q, k, v, out, lse, key_start, key_end, softmax_scale * 1.4426950408889634,
                      nq, k.shape[2], heads, HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)),
                      DOT_PRECISION=dot_precision(q.dtype))
    return out, lse
