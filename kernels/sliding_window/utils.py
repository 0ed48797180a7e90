"""Pieces shared by the forward and backward Triton kernels: the mask, the block ranges, and
the autotune configs (all in one place)."""
from __future__ import annotations

import os

import triton
import triton.language as tl


def is_interpreting() -> bool:
    """True when Triton kernels run on the CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------------------------
# Autotune configs. BLOCK_M is the query block, BLOCK_N the key block. The interpreter gets a
# single small config: it runs every config when tuning, and small blocks keep the CPU tests
# fast while still crossing several blocks.
# --------------------------------------------------------------------------------------------
def _configs(shapes):
    if is_interpreting():
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


FWD_CONFIGS = _configs([(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)])
# dK/dV: one program per key block, looping over query blocks.
BWD_DKDV_CONFIGS = _configs([(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 2)])
# dQ: one program per query block, looping over key blocks.
BWD_DQ_CONFIGS = _configs([(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)])
AUTOTUNE_KEY = ["HEAD_DIM", "HAS_PAD"]


@triton.jit
def allowed_mask(offs_q, offs_k, left, right, G, GQ):
    """True where query offs_q may attend key offs_k (broadcast shapes): inside the band
    ``q - left <= k <= q + right``, or the key is one of the first G (global) positions, or the
    query is one of the first GQ <= G (full) rows."""
    in_band = (offs_k >= offs_q - left) & (offs_k <= offs_q + right)
    return in_band | (offs_k < G) | (offs_q < GQ)


@triton.jit
def band_ranges(start, BLOCK_SELF: tl.constexpr, BLOCK_OTHER: tl.constexpr, back, fwd, lo_floor, N):
    """Blocks of the other side to visit for the rows ``[start, start + BLOCK_SELF)`` whose band is
    ``[row - back, row + fwd]``, starting no lower than ``lo_floor`` (a multiple of BLOCK_OTHER).

    Returns ``(a, b, c, hi)``: visit ``[a, b)`` masked, ``[b, c)`` unmasked (every pair inside
    the band and inside the sequence), ``[c, hi)`` masked; all block starts are multiples of
    BLOCK_OTHER except that ``hi`` is an exclusive index bound.
    """
    band_lo = tl.maximum(start - back, 0)
    hi = tl.minimum(start + BLOCK_SELF - 1 + fwd, N - 1) + 1
    a = tl.maximum((band_lo // BLOCK_OTHER) * BLOCK_OTHER, lo_floor)
    # interior: t0 >= last_row - back, and t0 + BLOCK_OTHER <= min(start + fwd + 1, N)
    int_lo = tl.cdiv(tl.maximum(start + BLOCK_SELF - 1 - back, 0), BLOCK_OTHER) * BLOCK_OTHER
    int_hi = (tl.minimum(start + fwd + 1, N) // BLOCK_OTHER) * BLOCK_OTHER
    b = tl.minimum(tl.maximum(int_lo, a), hi)
    c = tl.minimum(tl.maximum(int_hi, b), hi)
    return a, b, c, hi
