"""Forward Triton kernel: one program per (query block, batch*head).

Keys ``j < G`` are global (every query sees them); query rows ``i < GQ`` (``GQ <= G``,
num_global_queries) are full rows that see every key. A query block starting at or past
``GQ``, key-only global rows ``[GQ, G)`` included, visits only: the key blocks wholly made of
global keys (unmasked), the block that straddles ``G`` unless its band already covers it
(masked), and its band, split into masked edge blocks and unmasked interior blocks. Only a
block that holds full rows (start < GQ) visits every key (masked).
Softmax is online in base 2; the log2-sum-exp of each row is saved for the backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import AUTOTUNE_KEY, FWD_CONFIGS, allowed_mask, band_ranges


@triton.jit
def online_softmax_step(acc, l_i, m_i, b_s, b_v, DOT_PRECISION: tl.constexpr):
    """One key block of the streaming softmax, in log2 units: acc (BM, BD) fp32, l_i and m_i (BM,),
    b_s (BM, BN) scores already masked (-inf where a key is not allowed), b_v (BN, BD). A row whose
    scores have all been -inf keeps m = -inf and l = 0 (its max is taken as 0 in the exponentials,
    so it stays finite). Shared by this op's and the cross-attention op's forward kernels."""
    m_new = tl.maximum(m_i, tl.max(b_s, 1))                                      # (BM,)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    b_p = tl.math.exp2(b_s - m_safe[:, None])                                    # (BM, BN)
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(b_p, 1)
    acc = acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
               lo, hi, N, left, right, G, GQ, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               HAS_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    mask_d = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)                                  # (BN,)
        mask_n = offs_n < N
        b_kT = tl.load(k_base + offs_n[None, :] * HEAD_DIM + offs_d[:, None],
                       mask=mask_n[None, :] & mask_d[:, None], other=0.0)        # (BD, BN)
        b_qk = tl.dot(q, b_kT, input_precision=DOT_PRECISION) * qk_scale          # (BM, BN) log2 units
        if MASKED:
            b_allowed = allowed_mask(offs_m[:, None], offs_n[None, :], left, right, G, GQ) & mask_n[None, :]
            b_qk = tl.where(b_allowed, b_qk, float("-inf"))
        if HAS_PAD:
            b_kvalid = tl.load(kvalid_base + offs_n, mask=mask_n, other=0)       # (BN,)
            b_qk = tl.where(b_kvalid[None, :] != 0, b_qk, float("-inf"))
        b_v = tl.load(v_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :],
                      mask=mask_n[:, None] & mask_d[None, :], other=0.0)         # (BN, BD)
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, b_qk, b_v, DOT_PRECISION)
    return acc, l_i, m_i


@triton.autotune(configs=FWD_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, KVALID, qk_scale, N, H, left, right, G, GQ,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_PAD: tl.constexpr,
                DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    start_m = pid_m * BLOCK_M
    # tensors are contiguous (B, H, N, D): one (b, h) slice is N*D elements; 64-bit base offset
    off_bh = pid_bh.to(tl.int64) * N * HEAD_DIM
    q_base, k_base, v_base, o_base = Q + off_bh, K + off_bh, V + off_bh, O + off_bh
    kvalid_base = KVALID + (pid_bh // H).to(tl.int64) * N

    offs_m = start_m + tl.arange(0, BLOCK_M)                                      # (BM,)
    offs_d = tl.arange(0, BLOCK_D)                                                # (BD,)
    mask_m = offs_m < N
    mask_d = offs_d < HEAD_DIM
    q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)               # (BM, BD)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if start_m < GQ:
        # the block holds full query rows: they see every key
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                   0, N, N, left, right, G, GQ, qk_scale,
                                   HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
    else:
        # band rows (key-only global rows too): the global key blocks, then the band
        g_full = (G // BLOCK_N) * BLOCK_N                     # keys [0, g_full): all global
        a, b, c, hi = band_ranges(start_m, BLOCK_M, BLOCK_N, left, right, g_full, N)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                   0, g_full, N, left, right, G, GQ, qk_scale,
                                   HEAD_DIM, BLOCK_N, False, HAS_PAD, DOT_PRECISION)
        # the block straddling G, unless the band visits it (iff a == g_full < hi); a band that
        # ends below g_full (rows inside the global span) is already covered, its ranges are empty
        if (G > g_full) & ((a > g_full) | (hi <= g_full)):
            acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                       g_full, g_full + BLOCK_N, N, left, right, G, GQ, qk_scale,
                                       HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                   a, b, N, left, right, G, GQ, qk_scale,
                                   HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                   b, c, N, left, right, G, GQ, qk_scale,
                                   HEAD_DIM, BLOCK_N, False, HAS_PAD, DOT_PRECISION)
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kvalid_base, offs_m, offs_d,
                                   c, hi, N, left, right, G, GQ, qk_scale,
                                   HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)

    # epilogue: rows with no allowed key (and padded query rows) give zeros and lse = +inf,
    # which makes every backward probability exp2(s - lse) exactly 0 for them
    empty = l_i == 0.0
    if HAS_PAD:
        b_qvalid = tl.load(kvalid_base + offs_m, mask=mask_m, other=0)
        empty = empty | (b_qvalid == 0)
    l_safe = tl.where(empty, 1.0, l_i)
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    b_o = tl.where(empty[:, None], 0.0, acc / l_safe[:, None])
    b_lse = tl.where(empty, float("inf"), m_safe + tl.math.log2(l_safe))
    tl.store(o_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], b_o.to(O.dtype.element_ty),
             mask=mask_m[:, None] & mask_d[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * N + offs_m, b_lse, mask=mask_m)


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs must not silently drop to tf32: the op promises an exact fp32 path
    return "ieee" if dtype == torch.float32 else "tf32"


def attention_fwd(q, k, v, left, right, num_global, kvalid, softmax_scale, num_global_queries=None):
    """q, k, v: contiguous (B, H, N, D); kvalid: (B, N) int8 or None; num_global_queries in
    [0, num_global] (None: num_global). Returns out (B, H, N, D) in q's dtype and lse (B, H, N)
    fp32 in log2 units."""
    if num_global_queries is None:
        num_global_queries = num_global
    bsz, heads, n, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((bsz, heads, n), device=q.device, dtype=torch.float32)
    has_pad = kvalid is not None
    kvalid_arg = kvalid if has_pad else q.new_empty(1, dtype=torch.int8)
    log2e = 1.4426950408889634
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
    _fwd_kernel[grid](
        q, k, v, out, lse, kvalid_arg, softmax_scale * log2e, n, heads, left, right, num_global,
        num_global_queries,
        HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), HAS_PAD=has_pad,
        DOT_PRECISION=dot_precision(q.dtype),
    )
    return out, lse
