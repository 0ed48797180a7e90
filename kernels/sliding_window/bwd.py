"""Backward Triton kernels (FlashAttention-2 style, probabilities recomputed from the saved lse).

* ``_bwd_dkdv_kernel``: one program per (key block, batch*head); it loops over the query
  blocks that see its keys and accumulates dK, dV. A block holding global keys (start < G) is
  seen by every query, so it visits every query block; any other key block visits only the
  full query rows (``i < GQ``, num_global_queries) and its mirrored band, which is where the
  key-only global rows ``[GQ, G)`` and the plain rows reach it.
* ``_bwd_dq_kernel``: one program per (query block, batch*head); it loops over the same key
  blocks as the forward (every key for a block holding full rows, else the global key blocks
  and the band) and accumulates dQ.

Rows with no allowed key carry lse = +inf, so their probabilities are exactly 0 and need no
mask; padded keys are masked in dQ and zeroed at the end of dK/dV.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fwd import dot_precision
from .utils import AUTOTUNE_KEY, BWD_DKDV_CONFIGS, BWD_DQ_CONFIGS, allowed_mask, band_ranges


@triton.jit
def _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                lo, hi, N, left, right, G, GQ, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    mask_d = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        offs_m = start_m + tl.arange(0, BLOCK_M)                                  # (BM,)
        mask_m = offs_m < N
        b_q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                      mask=mask_m[:, None] & mask_d[None, :], other=0.0)         # (BM, BD)
        b_do = tl.load(do_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                       mask=mask_m[:, None] & mask_d[None, :], other=0.0)        # (BM, BD)
        b_lse = tl.load(lse_base + offs_m, mask=mask_m, other=float("inf"))      # (BM,)
        b_delta = tl.load(delta_base + offs_m, mask=mask_m, other=0.0)           # (BM,)
        b_sT = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * qk_scale   # (BN, BM)
        if MASKED:
            b_allowed = allowed_mask(offs_m[None, :], offs_n[:, None], left, right, G, GQ)
            b_sT = tl.where(b_allowed, b_sT, float("-inf"))
        b_pT = tl.math.exp2(b_sT - b_lse[None, :])                               # (BN, BM)
        dv += tl.dot(b_pT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)   # (BN, BD)
        b_dpT = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)       # (BN, BM)
        b_dsT = b_pT * (b_dpT - b_delta[None, :])
        dk += tl.dot(b_dsT.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)    # (BN, BD)
    return dk, dv


@triton.autotune(configs=BWD_DKDV_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, KVALID, qk_scale, sm_scale, N, H, left, right, G, GQ,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_PAD: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16)
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    start_n = pid_n * BLOCK_N
    off_bh = pid_bh.to(tl.int64) * N * HEAD_DIM
    q_base, do_base = Q + off_bh, DO + off_bh
    lse_base, delta_base = LSE + pid_bh.to(tl.int64) * N, DELTA + pid_bh.to(tl.int64) * N

    offs_n = start_n + tl.arange(0, BLOCK_N)                                      # (BN,)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    mask_kd = mask_n[:, None] & (offs_d < HEAD_DIM)[None, :]
    b_k = tl.load(K + off_bh + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_kd, other=0.0)
    b_v = tl.load(V + off_bh + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_kd, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    if start_n < G:
        # the block holds global keys: every query sees them
        dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                             0, N, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_M, True, DOT_PRECISION)
    else:
        # band keys: the full query rows, then the query blocks of the mirrored band
        q_full = (GQ // BLOCK_M) * BLOCK_M                    # queries [0, q_full): all full rows
        # query i sees key j when j - right <= i <= j + left: the band mirrored
        a, b, c, hi = band_ranges(start_n, BLOCK_N, BLOCK_M, right, left, q_full, N)
        dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                             0, q_full, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_M, False, DOT_PRECISION)
        # the query block straddling GQ, unless the band visits it (iff a == q_full < hi)
        if (GQ > q_full) & ((a > q_full) | (hi <= q_full)):
            dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                                 q_full, q_full + BLOCK_M, N, left, right, G, GQ, qk_scale,
                                 HEAD_DIM, BLOCK_M, True, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                             a, b, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_M, True, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                             b, c, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_M, False, DOT_PRECISION)
        dk, dv = _dkdv_inner(dk, dv, b_k, b_v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                             c, hi, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_M, True, DOT_PRECISION)

    if HAS_PAD:
        b_kvalid = tl.load(KVALID + (pid_bh // H).to(tl.int64) * N + offs_n, mask=mask_n, other=0)
        dk = tl.where(b_kvalid[:, None] != 0, dk, 0.0)
        dv = tl.where(b_kvalid[:, None] != 0, dv, 0.0)
    dk = dk * sm_scale
    tl.store(DK + off_bh + offs_n[:, None] * HEAD_DIM + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=mask_kd)
    tl.store(DV + off_bh + offs_n[:, None] * HEAD_DIM + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=mask_kd)


@triton.jit
def _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
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
        b_vT = tl.load(v_base + offs_n[None, :] * HEAD_DIM + offs_d[:, None],
                       mask=mask_n[None, :] & mask_d[:, None], other=0.0)        # (BD, BN)
        b_s = tl.dot(b_q, b_kT, input_precision=DOT_PRECISION) * qk_scale         # (BM, BN)
        if MASKED:
            b_allowed = allowed_mask(offs_m[:, None], offs_n[None, :], left, right, G, GQ) & mask_n[None, :]
            b_s = tl.where(b_allowed, b_s, float("-inf"))
        if HAS_PAD:
            b_kvalid = tl.load(kvalid_base + offs_n, mask=mask_n, other=0)
            b_s = tl.where(b_kvalid[None, :] != 0, b_s, float("-inf"))
        b_p = tl.math.exp2(b_s - b_lse[:, None])                                 # (BM, BN)
        b_dp = tl.dot(b_do, b_vT, input_precision=DOT_PRECISION)                  # (BM, BN)
        b_ds = b_p * (b_dp - b_delta[:, None])
        dq += tl.dot(b_ds.to(b_kT.dtype), tl.trans(b_kT), input_precision=DOT_PRECISION)  # (BM, BD)
    return dq


@triton.autotune(configs=BWD_DQ_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, KVALID, qk_scale, sm_scale, N, H, left, right, G, GQ,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_PAD: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    start_m = pid_m * BLOCK_M
    off_bh = pid_bh.to(tl.int64) * N * HEAD_DIM
    k_base, v_base = K + off_bh, V + off_bh
    kvalid_base = KVALID + (pid_bh // H).to(tl.int64) * N

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    mask_qd = mask_m[:, None] & (offs_d < HEAD_DIM)[None, :]
    b_q = tl.load(Q + off_bh + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
    b_do = tl.load(DO + off_bh + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
    b_lse = tl.load(LSE + pid_bh.to(tl.int64) * N + offs_m, mask=mask_m, other=float("inf"))
    b_delta = tl.load(DELTA + pid_bh.to(tl.int64) * N + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    if start_m < GQ:
        # the block holds full query rows: every key
        dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                       0, N, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
    else:
        # band rows (key-only global rows too): the same key blocks as the forward
        g_full = (G // BLOCK_N) * BLOCK_N
        a, b, c, hi = band_ranges(start_m, BLOCK_M, BLOCK_N, left, right, g_full, N)
        dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                       0, g_full, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_N, False, HAS_PAD, DOT_PRECISION)
        if (G > g_full) & ((a > g_full) | (hi <= g_full)):
            dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                           g_full, g_full + BLOCK_N, N, left, right, G, GQ, qk_scale,
                           HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
        dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                       a, b, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)
        dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                       b, c, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_N, False, HAS_PAD, DOT_PRECISION)
        dq = _dq_inner(dq, b_q, b_do, b_lse, b_delta, k_base, v_base, kvalid_base, offs_m, offs_d,
                       c, hi, N, left, right, G, GQ, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_PAD, DOT_PRECISION)

    dq = dq * sm_scale
    tl.store(DQ + off_bh + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=mask_qd)


def attention_bwd(do, q, k, v, out, lse, left, right, num_global, kvalid, softmax_scale, num_global_queries=None):
    """All tensors contiguous (B, H, N, D); lse (B, H, N) in log2 units; num_global_queries in
    [0, num_global] (None: num_global). Returns dq, dk, dv."""
    if num_global_queries is None:
        num_global_queries = num_global
    bsz, heads, n, d = q.shape
    delta = (out.float() * do.float()).sum(-1)                                   # (B, H, N)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    has_pad = kvalid is not None
    kvalid_arg = kvalid if has_pad else q.new_empty(1, dtype=torch.int8)
    log2e = 1.4426950408889634
    common = dict(HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), HAS_PAD=has_pad,
                  DOT_PRECISION=dot_precision(q.dtype))
    grid_kv = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), bsz * heads)  # noqa: E731
    _bwd_dkdv_kernel[grid_kv](q, k, v, do, lse, delta, dk, dv, kvalid_arg, softmax_scale * log2e,
                              softmax_scale, n, heads, left, right, num_global, num_global_queries, **common)
    grid_q = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
    _bwd_dq_kernel[grid_q](q, k, v, do, lse, delta, dq, kvalid_arg, softmax_scale * log2e,
                           softmax_scale, n, heads, left, right, num_global, num_global_queries, **common)
    return dq, dk, dv
