"""Public entry point: ``cross_attention`` (queries attend a per-query range of keys) and its
autograd Function."""
from __future__ import annotations

from typing import Optional

import torch

from ..sliding_window.attention import _triton_ready
from .blocked import blocked_cross_attention
from .naive import naive_cross_attention

BACKENDS = (None, "triton", "torch", "reference")


class CrossAttentionFunction(torch.autograd.Function):
    """Triton forward and backward; saves q, k, v, out and the row log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, key_start, key_end, softmax_scale):
        from .fwd import cross_attention_fwd

        out, lse = cross_attention_fwd(q, k, v, key_start, key_end, softmax_scale)
        ctx.save_for_backward(q, k, v, out, lse, key_start, key_end)
        ctx.softmax_scale = softmax_scale
        return out

    @staticmethod
    def backward(ctx, do):
        from .bwd import cross_attention_bwd

        q, k, v, out, lse, key_start, key_end = ctx.saved_tensors
        dq, dk, dv = cross_attention_bwd(do.contiguous(), q, k, v, out, lse, key_start, key_end,
                                         ctx.softmax_scale)
        return dq, dk, dv, None, None, None


def _check_inputs(q, k, v, key_start, key_end, backend):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of None (auto), 'triton', 'torch', 'reference'")
    for name, t in (("q", q), ("k", k), ("v", v), ("key_start", key_start), ("key_end", key_end)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seqlen, head_dim), got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, heads and head_dim")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    devices = {t.device for t in (q, k, v, key_start, key_end)}
    if len(devices) != 1:
        raise ValueError(f"q, k, v, key_start and key_end must be on one device, got {sorted(map(str, devices))}")
    bsz, heads, nq, d = q.shape
    if bsz < 1 or heads < 1 or nq < 1:
        raise ValueError(f"batch, heads and query length must be >= 1, got q shape {tuple(q.shape)}")
    if not 16 <= d <= 128:
        raise ValueError(f"head_dim must be between 16 and 128, got {d}")
    for name, t in (("key_start", key_start), ("key_end", key_end)):
        if t.dtype not in (torch.int32, torch.int64) or tuple(t.shape) != (bsz, nq):
            raise ValueError(f"{name} must be an int32/int64 tensor of shape (batch, query_len) = {(bsz, nq)}, "
                             f"got {t.dtype} {tuple(t.shape)}")
    nk = k.shape[2]
    if nk and (bool((key_start < 0).any()) or bool((key_end > nk).any())):
        raise ValueError(f"key ranges must lie in [0, {nk}]: got key_start min {int(key_start.min())}, "
                         f"key_end max {int(key_end.max())}")


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_start: torch.Tensor,
    key_end: torch.Tensor,
    softmax_scale: Optional[float] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Exact softmax cross-attention where each query attends one contiguous range of keys.

    Args:
        q: ``(batch, heads, query_len, head_dim)``, float32 / float16 / bfloat16.
        k, v: ``(batch, heads, key_len, head_dim)``, same dtype and device as q; ``key_len``
            may be 0 (then the output is all zeros). ``head_dim`` 16..128.
        key_start, key_end: ``(batch, query_len)`` int32/int64. Query ``i`` of batch ``b``
            attends key ``j`` iff ``key_start[b, i] <= j < key_end[b, i]`` (shared by all
            heads). Values lie in ``[0, key_len]``; ``key_start >= key_end`` is an empty range.
        softmax_scale: multiplies ``q @ k^T``; defaults to ``1 / sqrt(head_dim)``.
        backend: ``None`` = auto (``"triton"`` for CUDA tensors, ``"torch"`` otherwise);
            ``"triton"``: Triton forward and backward kernels (CUDA, or CPU under
            ``TRITON_INTERPRET=1``); a query block visits only the key blocks between its rows'
            lowest start and highest end; ``"torch"``: blocked fused SDPA over the same key
            slices, differentiable through autograd; ``"reference"``: dense fp32, tests only.

    Rows with an empty range return zeros (never NaN) and get zero gradients.

    Returns:
        ``(batch, heads, query_len, head_dim)`` in q's dtype.

    Raises:
        TypeError: a non-tensor input. ValueError: bad shapes, dtypes, ranges or backend name.
        RuntimeError: ``backend="triton"`` on a device it cannot run on.
    """
    _check_inputs(q, k, v, key_start, key_end, backend)
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[-1] ** -0.5
    if k.shape[2] == 0:
        return q * 0.0                        # no keys: zeros (and zero gradients)
    if backend is None:
        backend = "triton" if q.is_cuda else "torch"
    if backend == "reference":
        return naive_cross_attention(q, k, v, key_start, key_end, scale)
    if backend == "torch":
        return blocked_cross_attention(q, k, v, key_start, key_end, scale)
    _triton_ready(q.device)
    return CrossAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(),
                                        key_start.to(torch.int32).contiguous(),
                                        key_end.to(torch.int32).contiguous(), scale)
