"""Public entry point: ``sliding_window_attention`` and its autograd Function."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .blocked import blocked_sliding_window_attention
from .naive import naive_sliding_window_attention

BACKENDS = (None, "triton", "torch", "reference")
Window = Union[int, Tuple[int, int]]


class SlidingWindowAttentionFunction(torch.autograd.Function):
    """Triton forward and backward; saves q, k, v, out and the row log-sum-exp (O(N) extra)."""

    @staticmethod
    def forward(ctx, q, k, v, left, right, num_global, kvalid, softmax_scale, num_global_queries=None):
        from .fwd import attention_fwd

        if num_global_queries is None:
            num_global_queries = num_global
        out, lse = attention_fwd(q, k, v, left, right, num_global, kvalid, softmax_scale, num_global_queries)
        ctx.save_for_backward(q, k, v, out, lse, kvalid)
        ctx.args = (left, right, num_global, softmax_scale, num_global_queries)
        return out

    @staticmethod
    def backward(ctx, do):
        from .bwd import attention_bwd

        q, k, v, out, lse, kvalid = ctx.saved_tensors
        left, right, num_global, softmax_scale, num_global_queries = ctx.args
        dq, dk, dv = attention_bwd(do.contiguous(), q, k, v, out, lse, left, right, num_global,
                                   kvalid, softmax_scale, num_global_queries)
        return dq, dk, dv, None, None, None, None, None, None


def _parse_window(window, seqlen: int) -> Tuple[int, int]:
    if isinstance(window, bool):
        raise ValueError(f"window must be an int or a (left, right) pair of ints, got {window!r}")
    if isinstance(window, int):
        left = right = window
    elif (isinstance(window, (tuple, list)) and len(window) == 2
          and all(isinstance(w, int) and not isinstance(w, bool) for w in window)):
        left, right = window
    else:
        raise ValueError(f"window must be an int or a (left, right) pair of ints, got {window!r}")
    if left < 0 or right < 0:
        raise ValueError(f"window sizes must be >= 0, got left={left}, right={right}")
    # anything past the sequence is the same as the whole sequence; clamping keeps int32 safe
    return min(left, max(seqlen - 1, 0)), min(right, max(seqlen - 1, 0))


def _check_inputs(q, k, v, num_global, key_padding_mask, backend, num_global_queries=None):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of None (auto), 'triton', 'torch', 'reference'")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seqlen, head_dim), got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on the same device, got {q.device}, {k.device}, {v.device}")
    bsz, _, n, d = q.shape
    if n < 1 or bsz < 1 or q.shape[1] < 1:
        raise ValueError(f"batch, heads and seqlen must be >= 1, got shape {tuple(q.shape)}")
    if not 16 <= d <= 128:
        raise ValueError(f"head_dim must be between 16 and 128, got {d}")
    if isinstance(num_global, bool) or not isinstance(num_global, int) or not 0 <= num_global:
        raise ValueError(f"num_global must be an int >= 0, got {num_global!r}")
    if num_global_queries is not None and (
            isinstance(num_global_queries, bool) or not isinstance(num_global_queries, int)
            or not 0 <= num_global_queries <= num_global):
        raise ValueError(f"num_global_queries must be None or an int in [0, num_global] "
                         f"(num_global={num_global}), got {num_global_queries!r}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor (True = real token)")
        if tuple(key_padding_mask.shape) != (bsz, n):
            raise ValueError(f"key_padding_mask must have shape (batch, seqlen) = {(bsz, n)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")


def _triton_ready(device: torch.device) -> None:
    from .utils import is_interpreting

    if device.type == "cuda" or (device.type == "cpu" and is_interpreting()):
        return
    raise RuntimeError(
        f"backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before "
        f"longread is imported (got tensors on {device}); use backend='torch' on this device")


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: Window,
    num_global: int = 0,
    key_padding_mask: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    backend: Optional[str] = None,
    num_global_queries: Optional[int] = None,
) -> torch.Tensor:
    """Sliding-window + global (Longformer-style) exact softmax attention.

    Args:
        q, k, v: ``(batch, heads, seqlen, head_dim)``, float32 / float16 / bfloat16, same shape,
            dtype and device. ``head_dim`` 16..128 (any value; not only powers of two), any
            ``seqlen >= 1``.
        window: ``w`` (symmetric) or ``(left, right)``, both ``>= 0``. Query ``i`` attends key
            ``j`` when ``i - left <= j <= i + right``. ``0`` is the diagonal only; a window
            ``>= seqlen`` is full attention.
        num_global: ``G``. Keys ``0..G-1`` are global: every query attends to them. ``G`` may
            exceed ``seqlen`` (then every key is global).
        num_global_queries: ``GQ``, ``0 <= GQ <= G``; ``None`` (the default) means ``GQ = G``,
            Longformer's semantics, where the global positions are global both ways. Queries
            ``0..GQ-1`` attend to every key. Rows ``GQ..G-1`` are key-only globals (e.g. summary
            tokens): every query sees their keys, but their own queries see only the global
            keys and their band, so they cost O(window + G) each, like any other row; the
            whole op costs O(seqlen * (window + G) + GQ * seqlen).
        key_padding_mask: optional ``(batch, seqlen)`` bool, True = real token. Padded keys are
            never attended; padded query rows return zeros (and get zero gradients).
        softmax_scale: multiplies ``q @ k^T``; defaults to ``1 / sqrt(head_dim)``.
        backend: ``None`` = auto (``"triton"`` for CUDA tensors, ``"torch"`` otherwise);
            ``"triton"``: the Triton kernels (CUDA, or CPU under ``TRITON_INTERPRET=1``), with a
            Triton backward for dq, dk, dv; ``"torch"``: a blocked PyTorch path with
            O(seqlen * (window + G) + GQ * seqlen) memory, differentiable through autograd; ``"reference"``:
            dense masked softmax, O(seqlen^2), for tests only.

    Exact mask: query ``i`` attends key ``j`` iff ``key_padding_mask[b, j]`` and
    ``key_padding_mask[b, i]`` (when given) and
    ``(i - left <= j <= i + right) or j < G or i < GQ``. A row with no allowed key is all zeros
    (never NaN).

    Returns:
        ``(batch, heads, seqlen, head_dim)`` in q's dtype.

    Raises:
        ValueError: bad shapes, dtypes, window, num_global, num_global_queries, mask or backend name.
        TypeError: a non-tensor input.
        RuntimeError: ``backend="triton"`` on a device it cannot run on.
    """
    _check_inputs(q, k, v, num_global, key_padding_mask, backend, num_global_queries)
    n, d = q.shape[-2], q.shape[-1]
    left, right = _parse_window(window, n)
    num_global_queries = min(num_global if num_global_queries is None else num_global_queries, n)
    num_global = min(num_global, n)
    scale = float(softmax_scale) if softmax_scale is not None else d ** -0.5
    if backend is None:
        backend = "triton" if q.is_cuda else "torch"

    if backend == "reference":
        return naive_sliding_window_attention(q, k, v, (left, right), num_global, key_padding_mask, scale,
                                              num_global_queries=num_global_queries)
    if backend == "torch":
        return blocked_sliding_window_attention(q, k, v, left, right, num_global, key_padding_mask, scale,
                                                num_global_queries=num_global_queries)
    _triton_ready(q.device)
    kvalid = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else None
    return SlidingWindowAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(),
                                                left, right, num_global, kvalid, scale, num_global_queries)
