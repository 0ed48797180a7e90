"""Autotune configs of the cross-attention kernels (the interpreter gets one small config)."""
from __future__ import annotations

import triton

from ..sliding_window.utils import is_interpreting


def _configs(shapes):
    if is_interpreting():
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


FWD_CONFIGS = _configs([(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2)])
BWD_DKDV_CONFIGS = _configs([(64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 2)])
BWD_DQ_CONFIGS = _configs([(128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)])
AUTOTUNE_KEY = ["HEAD_DIM"]
