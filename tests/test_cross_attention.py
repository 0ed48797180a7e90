"""``longread.kernels.cross_attention`` against a dense fp32 reference and a masked SDPA baseline.

Tolerances follow flash-attn's tests: a backend's error against the fp32 reference may be at
most 2x (forward) / 3x (gradients) the error of PyTorch's own masked SDPA in the same dtype,
plus a small floor. Triton runs on the CPU under ``TRITON_INTERPRET=1`` (tiny shapes); its
bf16 ``tl.dot`` is wrong in the interpreter, so bf16 Triton runs on CUDA only.
"""
from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F

from longread.kernels import cross_attention, cross_attention_mask, naive_cross_attention
from longread.kernels.sliding_window.utils import is_interpreting

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
TRITON_OK = HAS_CUDA or is_interpreting()
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def make_ranges(kind, b, nq, nk, seed):
    """(key_start, key_end) int64 (B, Nq). random: any ranges, ~20% empty; local: sorted,
    contiguous windows as the fusion layer makes them; full: all keys; empty: all rows empty."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        a = torch.randint(0, nk + 1, (b, nq), generator=g)
        c = torch.randint(0, nk + 1, (b, nq), generator=g)
        start, end = torch.minimum(a, c), torch.maximum(a, c)
        drop = torch.rand(b, nq, generator=g) < 0.2
        return start, torch.where(drop, start, end)
    if kind == "local":
        centre = (torch.arange(nq) * nk // max(nq, 1)).expand(b, nq)
        return (centre - 5).clamp(0, nk), (centre + 9).clamp(0, nk)
    if kind == "full":
        return torch.zeros(b, nq, dtype=torch.long), torch.full((b, nq), nk)
    if kind == "empty":
        s = torch.randint(0, nk + 1, (b, nq), generator=g)
        return s, s
    raise ValueError(kind)


def docstring_mask(start, end, nk):
    """(B, 1, Nq, Nk) from the docstring, one pair at a time (independent of naive.py)."""
    b, nq = start.shape
    m = torch.zeros(b, 1, nq, nk, dtype=torch.bool)
    for bi in range(b):
        for i in range(nq):
            for j in range(nk):
                m[bi, 0, i, j] = bool(start[bi, i] <= j < end[bi, i])
    return m


def sdpa_baseline(q, k, v, allowed, scale):
    """Masked SDPA in q's dtype; rows with no allowed key -> 0 (dummy full mask, then x 0)."""
    nonempty = allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~nonempty, scale=scale)
    return out * nonempty


def run(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(do)
    # a tensor outside the graph (no row reads any key) has grad None: zero gradient
    return out.detach().float(), [torch.zeros_like(t).float() if t.grad is None else t.grad.detach().float()
                                  for t in (q, k, v)]


CASES = [  # (batch, heads, query_len, key_len, head_dim, ranges)
    (1, 1, 5, 7, 16, "random"),
    (2, 2, 37, 50, 24, "random"),
    (1, 2, 40, 33, 32, "local"),
    (2, 1, 19, 18, 16, "full"),
    (1, 2, 21, 9, 16, "empty"),
]
BACKENDS = [("torch", torch.float32), ("torch", torch.bfloat16),
            ("triton", torch.float32), ("triton", torch.float16)]


@pytest.mark.parametrize("backend, dtype", BACKENDS, ids=lambda x: str(x).replace("torch.", ""))
@pytest.mark.parametrize("case", CASES, ids=[f"{c[-1]}-{c[2]}x{c[3]}-d{c[4]}" for c in CASES])
def test_forward_and_backward_match_the_reference(backend, dtype, case):
    if backend == "triton" and not TRITON_OK:
        pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
    b, h, nq, nk, d, kind = case
    seed = seed_of(case, str(dtype), backend)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g)
    k, v = torch.randn(b, h, nk, d, generator=g), torch.randn(b, h, nk, d, generator=g)
    do = torch.randn(b, h, nq, d, generator=g)
    start, end = make_ranges(kind, b, nq, nk, seed)
    allowed = docstring_mask(start, end, nk)
    scale = d ** -0.5
    dev = lambda t: t.to(DEVICE)  # noqa: E731
    lo = lambda t: dev(t).to(dtype)  # noqa: E731

    ref_out, ref_grads = run(lambda *a: naive_cross_attention(*a, dev(start), dev(end), scale),
                             dev(q), dev(k), dev(v), dev(do))
    base_out, base_grads = run(lambda *a: sdpa_baseline(*a, dev(allowed), scale), lo(q), lo(k), lo(v), lo(do))
    out, grads = run(lambda *a: cross_attention(*a, key_start=dev(start), key_end=dev(end), backend=backend),
                     lo(q), lo(k), lo(v), lo(do))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    floor = FLOOR[dtype]
    assert (out - ref_out).abs().max() <= 2 * (base_out - ref_out).abs().max() + floor
    for name, got, base, ref in zip("qkv", grads, base_grads, ref_grads):
        assert torch.isfinite(got).all(), name
        assert (got - ref).abs().max() <= 3 * (base - ref).abs().max() + 3 * floor, name
    # rows with an empty range: exactly zero output and zero dq
    empty = (start >= end)[:, None, :, None].expand_as(out).to(out.device)
    assert (out[empty] == 0).all() and (grads[0][empty] == 0).all()


def test_reference_mask_matches_the_docstring():
    start, end = make_ranges("random", 2, 11, 13, 7)
    assert torch.equal(cross_attention_mask(start, end, 13), docstring_mask(start, end, 13))


@pytest.mark.parametrize("backend", ["torch", "reference"] + (["triton"] if TRITON_OK else []))
def test_no_keys_or_empty_ranges_give_zeros(backend):
    q = torch.randn(1, 2, 6, 16, device=DEVICE, requires_grad=True)
    k0 = torch.zeros(1, 2, 0, 16, device=DEVICE)
    zeros = torch.zeros(1, 6, dtype=torch.long, device=DEVICE)
    out = cross_attention(q, k0, k0, key_start=zeros, key_end=zeros, backend=backend)
    assert out.shape == q.shape and (out == 0).all()
    k = torch.randn(1, 2, 4, 16, device=DEVICE, requires_grad=True)
    out = cross_attention(q, k, k, key_start=zeros + 3, key_end=zeros + 3, backend=backend)
    assert (out == 0).all()
    out.sum().backward()
    assert (q.grad == 0).all() and (k.grad is None or (k.grad == 0).all())


def test_argument_checks():
    q, k = torch.randn(1, 2, 4, 16), torch.randn(1, 2, 5, 16)
    r = torch.zeros(1, 4, dtype=torch.long)
    ok = dict(key_start=r, key_end=r + 5)
    with pytest.raises(ValueError, match="backend"):
        cross_attention(q, k, k, backend="cuda", **ok)
    with pytest.raises(TypeError, match="key_start"):
        cross_attention(q, k, k, key_start=[0] * 4, key_end=r)
    with pytest.raises(ValueError, match="batch, heads and head_dim"):
        cross_attention(q, torch.randn(1, 3, 5, 16), torch.randn(1, 3, 5, 16), **ok)
    with pytest.raises(ValueError, match="head_dim"):
        cross_attention(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), **ok)
    with pytest.raises(ValueError, match="same dtype"):
        cross_attention(q, k.half(), k.half(), **ok)
    with pytest.raises(ValueError, match="shape \\(batch, query_len\\)"):
        cross_attention(q, k, k, key_start=r[:, :3], key_end=r[:, :3] + 1)
    with pytest.raises(ValueError, match="int32/int64"):
        cross_attention(q, k, k, key_start=r.float(), key_end=r + 1)
    with pytest.raises(ValueError, match=r"lie in \[0, 5\]"):
        cross_attention(q, k, k, key_start=r, key_end=r + 6)
    with pytest.raises(ValueError, match="k and v"):
        cross_attention(q, k, k[:, :, :3], **ok)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_gpu_large(dtype):
    case = (2, 4, 1000, 700, 64, "local")
    test_forward_and_backward_match_the_reference("triton", dtype, case)
