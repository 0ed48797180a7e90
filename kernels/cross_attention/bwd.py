"""Backward Triton kernels (FlashAttention-2 style, probabilities recomputed from the saved lse).

* ``_bwd_dq_kernel``: one program per (query block, batch*head) over the same key blocks as
  the forward.
* ``_bwd_dkdv_kernel``: one program per (key block, batch*head); it walks the query blocks and
  skips every block none of whose rows' ranges meet its keys.

Rows with no key carry lse = +inf, so their probabilities are exactly 0.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sliding_window.fwd import dot_precision
from .fwd import block_key_range
from .utils import AUTOTUNE_KEY, BWD_DKDV_CONFIGS, BWD_DQ_CONFIGS


@triton.autotune(configs=BWD_DKDV_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, KS, KE, qk_scale, sm_scale, NQ, NK, H,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    start_n = pid_n * BLOCK_N
    q_base = Q + pid_bh.to(tl.int64) * NQ * HEAD_DIM
    do_base = DO + pid_bh.to(tl.int64) * NQ * HEAD_DIM
    kv_off = pid_bh.to(tl.int64) * NK * HEAD_DIM
    lse_base, delta_base = LSE + pid_bh.to(tl.int64) * NQ, DELTA + pid_bh.to(tl.int64) * NQ
    r_base = (pid_bh // H).to(tl.int64) * NQ

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < NK
    mask_d = offs_d < HEAD_DIM
    mask_kd = mask_n[:, None] & mask_d[None, :]
    b_k = tl.load(K + kv_off + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_kd, other=0.0)
    b_v = tl.load(V + kv_off + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_kd, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, NQ, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        ks, ke, lo, hi = block_key_range(KS + r_base, KE + r_base, offs_m, NQ, NK, BLOCK_N)
        if (lo < start_n + BLOCK_N) & (hi > start_n):
            mask_m = offs_m < NQ
            mask_qd = mask_m[:, None] & mask_d[None, :]
            b_q = tl.load(q_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
            b_do = tl.load(do_base + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
            b_lse = tl.load(lse_base + offs_m, mask=mask_m, other=float("inf"))
            b_delta = tl.load(delta_base + offs_m, mask=mask_m, other=0.0)
            b_sT = tl.dot(b_k, tl.trans(b_q), input_precision=DOT_PRECISION) * qk_scale   # (BN, BM)
            allowed = (offs_n[:, None] >= ks[None, :]) & (offs_n[:, None] < ke[None, :]) & mask_n[:, None]
            b_sT = tl.where(allowed, b_sT, float("-inf"))
            b_pT = tl.math.exp2(b_sT - b_lse[None, :])
            dv += tl.dot(b_pT.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
            b_dpT = tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)
            b_dsT = b_pT * (b_dpT - b_delta[None, :])
            dk += tl.dot(b_dsT.to(b_q.dtype), b_q, input_precision=DOT_PRECISION)
    dk = dk * sm_scale
    tl.store(DK + kv_off + offs_n[:, None] * HEAD_DIM + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=mask_kd)
    tl.store(DV + kv_off + offs_n[:, None] * HEAD_DIM + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=mask_kd)


@triton.autotune(configs=BWD_DQ_CONFIGS, key=AUTOTUNE_KEY)
@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, KS, KE, qk_scale, sm_scale, NQ, NK, H,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    q_off = pid_bh.to(tl.int64) * NQ * HEAD_DIM
    k_base = K + pid_bh.to(tl.int64) * NK * HEAD_DIM
    v_base = V + pid_bh.to(tl.int64) * NK * HEAD_DIM
    r_base = (pid_bh // H).to(tl.int64) * NQ

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < NQ
    mask_d = offs_d < HEAD_DIM
    mask_qd = mask_m[:, None] & mask_d[None, :]
    b_q = tl.load(Q + q_off + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
    b_do = tl.load(DO + q_off + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_qd, other=0.0)
    b_lse = tl.load(LSE + pid_bh.to(tl.int64) * NQ + offs_m, mask=mask_m, other=float("inf"))
    b_delta = tl.load(DELTA + pid_bh.to(tl.int64) * NQ + offs_m, mask=mask_m, other=0.0)
    ks, ke, lo, hi = block_key_range(KS + r_base, KE + r_base, offs_m, NQ, NK, BLOCK_N)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < NK
        b_kT = tl.load(k_base + offs_n[None, :] * HEAD_DIM + offs_d[:, None],
                       mask=mask_n[None, :] & mask_d[:, None], other=0.0)        # (BD, BN)
        b_vT = tl.load(v_base + offs_n[None, :] * HEAD_DIM + offs_d[:, None],
                       mask=mask_n[None, :] & mask_d[:, None], other=0.0)        # (BD, BN)
        b_s = tl.dot(b_q, b_kT, input_precision=DOT_PRECISION) * qk_scale
        allowed = (offs_n[None, :] >= ks[:, None]) & (offs_n[None, :] < ke[:, None]) & mask_n[None, :]
        b_s = tl.where(allowed, b_s, float("-inf"))
        b_p = tl.math.exp2(b_s - b_lse[:, None])
        b_dp = tl.dot(b_do, b_vT, input_precision=DOT_PRECISION)
        b_ds = b_p * (b_dp - b_delta[:, None])
        dq += tl.dot(b_ds.to(b_kT.dtype), tl.trans(b_kT), input_precision=DOT_PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + q_off + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=mask_qd)


def cross_attention_bwd(do, q, k, v, out, lse, key_start, key_end, softmax_scale):
    """Contiguous q/do/out (B, H, Nq, D), k/v (B, H, Nk, D), lse (B, H, Nq) log2 units -> dq, dk, dv."""
    bsz, heads, nq, d = q.shape
    nk = k.shape[2]
    delta = (out.float() * do.float()).sum(-1)                                   # (B, H, Nq)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = dict(HEAD_DIM=d, BLOCK_D=max(16, triton.next_power_of_2(d)), DOT_PRECISION=dot_precision(q.dtype))
    qk_scale = softmax_scale * 1.4426950408889634
    grid_kv = lambda meta: (triton.cdiv(nk, meta["BLOCK_N"]), bsz * heads)  # noqa: E731
    _bwd_dkdv_kernel[grid_kv](q, k, v, do, lse, delta, dk, dv, key_start, key_end, qk_scale, softmax_scale,
                              nq, nk, heads, **common)
    grid_q = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
    _bwd_dq_kernel[grid_q](q, k, v, do, lse, delta, dq, key_start, key_end, qk_scale, softmax_scale,
                           nq, nk, heads, **common)
    return dq, dk, dv
