"""Tests for ``longread.kernels.sliding_window_attention`` (backends "torch", "triton", "reference").

Tolerance policy (flash-attn style)
-----------------------------------
For inputs in dtype ``dt`` (fp32 / fp16 / bf16) and a random upstream gradient ``do``:

* ``ref``  = ``naive_sliding_window_attention(..., upcast=True)`` on fp32 copies of the same inputs:
  the dense fp32 reference (its gradients via autograd on those fp32 copies);
* ``base`` = ``naive_sliding_window_attention(..., upcast=False)`` run in ``dt``: the same-dtype
  plain-PyTorch baseline (on CPU fp16 / bf16 matmuls work);
* ``err(x) = max |x - ref|``, computed in fp32.

We assert ``err(backend) <= 2 * err(base) + floor`` for the output and
``err(backend) <= 3 * err(base) + floor`` for dq, dk, dv, with ``floor = 1e-5`` for fp32 and
``1e-3`` for fp16 / bf16 (in fp32 the baseline *is* the reference, so fp32 is held to the floor).
Every output and gradient must also be free of NaN / inf.

Independent checks (not built on ``naive.py``): a boolean mask written straight from the docstring
(and cross-checked against a brute-force loop) fed to ``F.scaled_dot_product_attention``
(forward and gradients), and PyTorch FlexAttention (forward only: torch 2.13 refuses FlexAttention
backward on CPU, "FlexAttention does not support backward on CPU").

Block visits (section 8): NaN keys / queries poison every block that loads them (0 * NaN = NaN), so
rows and keys that must never share a block with them staying finite and exact shows which blocks the
kernels and the torch path visit (rows >= num_global_queries: only the global key blocks and their band).

Triton: runs on CUDA, or on CPU when ``TRITON_INTERPRET=1`` is set before import (the CI runs
``TRITON_INTERPRET=1 pytest``); otherwise its tests skip with a reason. The interpreter uses a single
16x16 block config, so N=129 crosses 9 blocks and G=17 straddles a block boundary. bf16 Triton is
GPU-only: the Triton 3.x interpreter's ``tl.dot`` on bf16 operands returns garbage (an interpreter
limitation, seen with a 5-line kernel), so the bf16 Triton cases are behind ``@pytest.mark.gpu``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
import zlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.kernels import attention_mask, naive_sliding_window_attention, sliding_window_attention

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}
OUT_FACTOR, GRAD_FACTOR = 2.0, 3.0
DTYPE_IDS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def triton_skip_reason():
    """None when the Triton backend can run here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if HAS_CUDA or INTERPRET:
        return None
    return "backend='triton' needs CUDA or TRITON_INTERPRET=1 (set before import)"


def require_backend(backend, dtype=None):
    if backend != "triton":
        return
    reason = triton_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if dtype == torch.bfloat16 and not HAS_CUDA:
        pytest.skip("bf16 Triton runs on GPU only: the Triton interpreter's tl.dot mishandles bf16")


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """These tensors are tiny: on a small shared CPU, intra-op threads only add sync stalls (seen: 100x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def lr(window):
    return (window, window) if isinstance(window, int) else tuple(window)


def make_qkv(b, h, n, d, dtype, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(b, h, n, d, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    return q, k, v, do


def make_mask(kind, b, n, seed, device=DEVICE):
    """None; "lens": suffix padding, random lengths >= N/2, the last batch row has length 1;
    "holes": ~30% of positions padded anywhere (position 0 kept)."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "lens":
        lens = torch.randint((n + 1) // 2, n + 1, (b,), generator=g)
        lens[-1] = 1
        return (torch.arange(n)[None, :] < lens[:, None]).to(device)
    if kind == "holes":
        m = torch.rand(b, n, generator=g) < 0.7
        m[:, 0] = True
        return m.to(device)
    raise ValueError(kind)


def docstring_mask(b, n, left, right, num_global, kpm, num_global_queries=None):
    """(B, 1, N, N) allowed pairs, written from the docstring (independent of naive.attention_mask)."""
    gq = num_global if num_global_queries is None else num_global_queries
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    m = ((i - left <= j) & (j <= i + right)) | (i < gq) | (j < num_global)
    m = m.expand(b, 1, n, n).clone()
    if kpm is not None:
        kpm = kpm.cpu()
        m &= kpm[:, None, None, :] & kpm[:, None, :, None]
    return m


def sdpa_oracle(q, k, v, allowed, scale=None):
    """Masked attention through F.scaled_dot_product_attention; rows with no allowed key -> 0.

    Empty rows get an all-True dummy mask (so SDPA stays finite) and are then multiplied by 0,
    which also gives them (and everything they read) zero gradient."""
    allowed = allowed.to(q.device)
    nonempty = allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~nonempty, scale=scale)
    return out * nonempty


def fwd_bwd(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), do)
    return out.detach(), dq, dk, dv


def assert_finite(name, t):
    assert torch.isfinite(t).all(), f"{name} has NaN/inf ({torch.isnan(t).sum().item()} NaN)"


def max_err(x, ref):
    return (x.float() - ref.float()).abs().max().item() if x.numel() else 0.0


def check_against_reference(backend, q, k, v, do, window, num_global, kpm, softmax_scale=None,
                            num_global_queries=None):
    """Run backend, the same-dtype baseline and the fp32 reference; apply the tolerance policy."""
    dtype = q.dtype
    left, right = lr(window)
    gq = dict(num_global_queries=num_global_queries)
    got = fwd_bwd(lambda a, b, c: sliding_window_attention(
        a, b, c, window=window, num_global=num_global, key_padding_mask=kpm,
        softmax_scale=softmax_scale, backend=backend, **gq), q, k, v, do)
    base = fwd_bwd(lambda a, b, c: naive_sliding_window_attention(
        a, b, c, (left, right), num_global, kpm, softmax_scale, upcast=False, **gq), q, k, v, do)
    ref = fwd_bwd(lambda a, b, c: naive_sliding_window_attention(
        a, b, c, (left, right), num_global, kpm, softmax_scale, upcast=True, **gq),
        q.float(), k.float(), v.float(), do.float())
    assert got[0].dtype == dtype, f"output dtype {got[0].dtype} != input dtype {dtype}"
    for name, g, b_, r, factor in zip(("out", "dq", "dk", "dv"), got, base, ref,
                                      (OUT_FACTOR, GRAD_FACTOR, GRAD_FACTOR, GRAD_FACTOR)):
        assert g.shape == r.shape
        assert_finite(f"{backend} {name}", g)
        assert_finite(f"reference {name}", r)
        e, eb = max_err(g, r), max_err(b_, r)
        tol = factor * eb + FLOOR[dtype]
        assert e <= tol, (f"{backend} {name} ({DTYPE_IDS[dtype]}): max err {e:.3e} vs fp32 reference > "
                          f"{factor:g} * baseline err {eb:.3e} + {FLOOR[dtype]:g}")
    return got


# ------------------------------------------------------------------------------------------------
# 1-2. forward + gradients vs the fp32 reference, flash-attn style tolerances
# ------------------------------------------------------------------------------------------------
# (B, H, N, D, window, G, padding)
CASES = [
    (1, 1, 1, 16, 0, 0, None),
    (2, 1, 1, 32, 3, 1, "lens"),
    (2, 2, 7, 24, 3, 1, "lens"),
    (1, 2, 7, 16, 0, 0, None),
    (2, 1, 7, 64, (0, 9), 17, "lens"),          # G > seqlen, right side >= seqlen
    (2, 2, 129, 32, (0, 9), 0, "lens"),
    (2, 2, 129, 24, (17, 3), 17, "lens"),
    (2, 1, 129, 64, 0, 1, "lens"),
    (2, 1, 129, 16, 0, 0, "holes"),             # window 0: holes give rows with no allowed key
    (1, 2, 129, 80, 200, 0, None),              # window >= seqlen: full attention
    (2, 1, 129, 16, 16, 17, "holes"),
    (2, 1, 129, 48, (5, 300), 0, "lens"),
    (2, 1, 129, 16, 5, 200, "lens"),            # G > seqlen: every position global
    (2, 1, 517, 32, (17, 3), 17, "lens"),
    (1, 2, 517, 64, 64, 1, None),
]


def case_id(c):
    b, h, n, d, w, g, pad = c
    ws = f"w{w}" if isinstance(w, int) else f"w{w[0]}-{w[1]}"
    return f"b{b}h{h}-n{n}-d{d}-{ws}-g{g}-{pad or 'nopad'}"


DTYPES_BY_BACKEND = {
    "torch": (torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16),          # bf16 Triton: see test_triton_gpu_large
    "reference": (torch.float32, torch.float16, torch.bfloat16),
}
# The Triton interpreter needs ~5-15 s per seqlen-517 case: each runs there in one dtype only.
TRITON_CPU_517 = {CASES[-2]: torch.float16, CASES[-1]: torch.float32}


def _in_grid(backend, dtype, case):
    if backend == "triton" and case in TRITON_CPU_517 and not HAS_CUDA:
        return TRITON_CPU_517[case] == dtype
    return True


GRID = [pytest.param(be, dt, c, id=f"{be}-{DTYPE_IDS[dt]}-{case_id(c)}")
        for be in ("torch", "triton", "reference") for dt in DTYPES_BY_BACKEND[be] for c in CASES
        if _in_grid(be, dt, c)]


@pytest.mark.parametrize("backend,dtype,case", GRID)
def test_matches_fp32_reference(backend, dtype, case):
    require_backend(backend, dtype)
    b, h, n, d, window, num_global, pad = case
    seed = seed_of(case, DTYPE_IDS[dtype])
    q, k, v, do = make_qkv(b, h, n, d, dtype, seed)
    kpm = make_mask(pad, b, n, seed)
    check_against_reference(backend, q, k, v, do, window, num_global, kpm)


@pytest.mark.parametrize("case", [pytest.param(c, id=case_id(c)) for c in CASES])
def test_reference_backend_vs_sdpa_oracle(case):
    """The "reference" backend (and the fp32 reference itself) against an independent SDPA oracle."""
    b, h, n, d, window, num_global, pad = case
    seed = seed_of(case, "sdpa")
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask(pad, b, n, seed)
    left, right = lr(window)
    allowed = docstring_mask(b, n, left, right, num_global, kpm)
    got = fwd_bwd(lambda a, b_, c: sliding_window_attention(
        a, b_, c, window=window, num_global=num_global, key_padding_mask=kpm, backend="reference"),
        q, k, v, do)
    want = fwd_bwd(lambda a, b_, c: sdpa_oracle(a, b_, c, allowed), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert_finite(name, g)
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_attention_mask_matches_bruteforce():
    """naive.attention_mask and the test's docstring_mask both equal a brute-force loop."""
    n = 13
    kpm = torch.tensor([[True] * 13, [True] * 5 + [False] * 8, [i % 3 != 1 for i in range(13)]])
    for left, right, num_global in [(0, 0, 0), (2, 0, 0), (0, 3, 2), (4, 1, 5), (20, 20, 0), (1, 1, 20)]:
        brute = torch.zeros(3, 1, n, n, dtype=torch.bool)
        for bb in range(3):
            for i in range(n):
                for j in range(n):
                    in_band = i - left <= j <= i + right
                    brute[bb, 0, i, j] = bool(kpm[bb, i] and kpm[bb, j]
                                              and (in_band or i < num_global or j < num_global))
        assert torch.equal(attention_mask(n, left, right, num_global, kpm), brute)
        assert torch.equal(docstring_mask(3, n, left, right, num_global, kpm), brute)
        assert torch.equal(attention_mask(n, left, right, num_global), brute[0, 0])


# ------------------------------------------------------------------------------------------------
# 4. FlexAttention (independent implementation, forward only on CPU)
# ------------------------------------------------------------------------------------------------
FLEX_CASES = [c for c in CASES if c[2] <= 129] + [(2, 1, 517, 32, (17, 3), 17, "lens")]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
@pytest.mark.parametrize("case", [pytest.param(c, id=case_id(c)) for c in FLEX_CASES])
def test_matches_flex_attention(backend, case):
    """Compare with torch.nn.attention.flex_attention run eagerly on CPU (create_block_mask's default
    _compile=False works there; flex_attention warns that it is unfused). FlexAttention has no CPU
    backward in torch 2.13, so only the forward is compared. Flex's value on rows with no allowed key
    is its own convention (it happens to be 0 in 2.13), so those rows are excluded here; our zeros
    there are asserted by test_rows_without_allowed_keys_are_zero."""
    require_backend(backend)
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    b, h, n, d, window, num_global, pad = case
    seed = seed_of(case, "flex")
    q, k, v, _ = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask(pad, b, n, seed)
    left, right = lr(window)
    kpm_cpu = kpm.cpu() if kpm is not None else torch.ones(b, n, dtype=torch.bool)

    def mask_mod(bi, hi, qi, ki):
        band = (ki >= qi - left) & (ki <= qi + right)
        return (band | (qi < num_global) | (ki < num_global)) & kpm_cpu[bi, ki] & kpm_cpu[bi, qi]

    block_mask = flex.create_block_mask(mask_mod, b, h, n, n, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = flex.flex_attention(q.cpu(), k.cpu(), v.cpu(), block_mask=block_mask)
    got = sliding_window_attention(q, k, v, window=window, num_global=num_global, key_padding_mask=kpm,
                                   backend=backend).cpu()
    assert_finite("out", got)
    nonempty = docstring_mask(b, n, left, right, num_global, kpm).any(-1)[..., None].expand_as(got)
    torch.testing.assert_close(got[nonempty], want[nonempty], atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# 3. semantics
# ------------------------------------------------------------------------------------------------
ALL_BACKENDS = ["torch", "triton", "reference"]
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def run_op(q, k, v, backend, **kw):
    return sliding_window_attention(q, k, v, backend=backend, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("pad", ["lens", "holes"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_padded_queries_are_zero_with_zero_grad(backend, pad, dtype):
    require_backend(backend, dtype)
    b, h, n, d = 3, 2, 37, 16
    seed = seed_of("padq", pad)
    q, k, v, do = make_qkv(b, h, n, d, dtype, seed)
    kpm = make_mask(pad, b, n, seed)
    if pad == "lens":
        kpm[1] = torch.arange(n, device=DEVICE) < 10
    assert (~kpm).any()
    out, dq, dk, dv = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=(2, 5), num_global=3,
                                                      key_padding_mask=kpm), q, k, v, do)
    padded = ~kpm[:, None, :, None].expand_as(out)
    assert (out[padded] == 0).all(), "padded query rows must be exactly zero"
    assert (dq[padded] == 0).all(), "padded query rows must get zero dq"
    assert (dk[padded] == 0).all() and (dv[padded] == 0).all(), "padded keys must get zero dk, dv"
    for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert_finite(name, t)
    assert (out[~padded] != 0).any()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_rows_without_allowed_keys_are_zero(backend):
    """Rows with no allowed key give zeros (not NaN) and zero gradients: window 0 with the query's own
    key padded (holes in the mask), and a batch row whose mask is all False, with and without G."""
    require_backend(backend)
    b, h, n, d = 2, 2, 40, 32
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("empty"))
    kpm = torch.ones(b, n, dtype=torch.bool, device=DEVICE)
    kpm[0, 3::4] = False            # holes: with window 0 those queries have no allowed key
    kpm[1] = False                  # every key of batch row 1 padded
    for window, num_global in ((0, 0), ((0, 2), 0), (3, 5), (0, 50)):
        out, dq, dk, dv = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=window,
                                                          num_global=num_global, key_padding_mask=kpm),
                                  q, k, v, do)
        allowed = docstring_mask(b, n, *lr(window), num_global, kpm)
        empty = ~allowed.any(-1)[..., None].expand_as(out)          # (B, H, N, D)
        assert empty[0].any()
        for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
            assert_finite(f"{name} window={window} G={num_global}", t)
        assert (out[empty] == 0).all(), f"empty rows not zero (window={window}, G={num_global})"
        assert (dq[empty] == 0).all() and (dk[1] == 0).all() and (dv[1] == 0).all()
        ref = naive_sliding_window_attention(q, k, v, lr(window), num_global, kpm)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_output_dtype_matches_input(backend, dtype):
    require_backend(backend, dtype)
    q, k, v, _ = make_qkv(2, 1, 20, 16, dtype, 1)
    for kpm in (None, make_mask("lens", 2, 20, 1)):
        out = run_op(q, k, v, backend, window=(2, 1), num_global=2, key_padding_mask=kpm)
        assert out.dtype == dtype and out.shape == q.shape and out.device == q.device
        assert_finite("out", out)


@pytest.mark.parametrize("window", [0, (0, 3), 2 ** 40])
@pytest.mark.parametrize("extra_global", [0, 5, 2 ** 40], ids=["G=N", "G=N+5", "G=2^40"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_global_covering_sequence_is_full_attention(backend, extra_global, window):
    require_backend(backend)
    b, h, n, d = 2, 2, 45, 32
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("full", extra_global))
    num_global = n + extra_global if extra_global < 2 ** 40 else extra_global
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=window, num_global=num_global),
                  q, k, v, do)
    want = fwd_bwd(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("n", [64, 96])
def test_full_query_rows_filling_whole_blocks(n):
    """Every query row global with N a multiple of the torch path's block: no block is left for
    the band pass, and the result is still full attention."""
    q, k, v, do = make_qkv(2, 2, n, 16, torch.float32, seed_of("whole-blocks", n))
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, "torch", window=(1, 2), num_global=n), q, k, v, do)
    want = fwd_bwd(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("window", [44, 45, (44, 1000), 2 ** 40], ids=["N-1", "N", "(N-1,1000)", "2^40"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_window_covering_sequence_is_full_attention(backend, window):
    require_backend(backend)
    b, h, n, d = 1, 2, 45, 16
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("fullw", window))
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=window), q, k, v, do)
    want = fwd_bwd(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_window0_returns_v_exactly(backend, dtype):
    """window 0, G=0, no padding: each query sees only its own key, softmax of one key is 1."""
    require_backend(backend, dtype)
    q, k, v, do = make_qkv(2, 2, 50, 32, dtype, seed_of("w0"))
    q = q * 10                                     # large scores must not matter
    out, dq, dk, dv = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=0), q, k, v, do)
    assert torch.equal(out, v), f"max |out - v| = {max_err(out, v):.3e}"
    # the backward recomputes p = exp(s - lse) and ds = p * (dp - delta): equal up to rounding
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(dv, do, atol=tol, rtol=tol)
    assert max_err(dq, torch.zeros_like(dq)) <= 1e-4 and max_err(dk, torch.zeros_like(dk)) <= 1e-4


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_softmax_scale_is_honoured(backend):
    require_backend(backend)
    b, h, n, d = 2, 2, 40, 32
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("scale"))
    kpm = make_mask("lens", b, n, seed_of("scale"))
    kw = dict(window=(3, 6), num_global=2, key_padding_mask=kpm)
    default = run_op(q, k, v, backend, **kw)
    explicit = run_op(q, k, v, backend, softmax_scale=d ** -0.5, **kw)
    torch.testing.assert_close(default, explicit, atol=1e-6, rtol=1e-6)
    # a non-default scale: matches the reference (fwd + grads) and really changes the output
    got = check_against_reference(backend, q, k, v, do, (3, 6), 2, kpm, softmax_scale=0.37)
    assert max_err(got[0], default) > 1e-2
    # scale 0: uniform weights, so the output is the mean of v over the allowed keys (independent formula)
    allowed = docstring_mask(b, n, 3, 6, 2, kpm).to(DEVICE).float()
    mean_v = (allowed @ v) / allowed.sum(-1, keepdim=True).clamp(min=1)
    out0 = run_op(q, k, v, backend, softmax_scale=0.0, **kw)
    torch.testing.assert_close(out0, mean_v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_noncontiguous_inputs(backend):
    """(B, N, H, D) tensors transposed to (B, H, N, D) views."""
    require_backend(backend)
    b, h, n, d = 2, 3, 33, 24
    g = torch.Generator().manual_seed(5)
    q, k, v, do = (torch.randn(b, n, h, d, generator=g).to(DEVICE).transpose(1, 2) for _ in range(4))
    assert not q.is_contiguous()
    kpm = make_mask("lens", b, n, 5)
    got = check_against_reference(backend, q, k, v, do, (4, 2), 3, kpm)
    again = check_against_reference(backend, q.contiguous(), k.contiguous(), v.contiguous(), do.contiguous(),
                                    (4, 2), 3, kpm)
    for x, y in zip(got, again):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


# Window sides and G just around multiples of 16 (the interpreter's block) and 32 (the torch path's
# smallest block): off-by-one errors in the band / interior / global-straddle block ranges show here.
BOUNDARY_WINDOWS = [((0, 14), 0), ((14, 0), 0), ((15, 15), 1), ((16, 16), 15), ((17, 13), 16),
                    ((31, 30), 17), ((14, 46), 0), ((46, 14), 33), ((30, 33), 31), ((1, 31), 32)]


@pytest.mark.parametrize("window,num_global", BOUNDARY_WINDOWS,
                         ids=[f"w{w[0]}-{w[1]}-g{g}" for w, g in BOUNDARY_WINDOWS])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_block_boundary_windows(backend, window, num_global):
    require_backend(backend)
    b, h, n, d = 2, 1, 70, 16
    seed = seed_of("boundary", window, num_global)
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    check_against_reference(backend, q, k, v, do, window, num_global, make_mask("lens", b, n, seed))


@pytest.mark.parametrize("group_elements", [None, 1, 4096], ids=["default", "one-block-groups", "4096"])
@pytest.mark.parametrize("case", [pytest.param(c, id=case_id(c)) for c in CASES if c[2] > 1])
def test_torch_backend_under_no_grad(case, group_elements, monkeypatch):
    """Under no_grad the torch path splits its query blocks into groups (sized by _GROUP_ELEMENTS,
    2**26 by default, so only huge inputs split naturally): shrink it to exercise the split."""
    import longread.kernels.sliding_window.blocked as blocked
    if group_elements is not None:
        if not hasattr(blocked, "_GROUP_ELEMENTS"):
            pytest.skip("the torch path no longer groups blocks under no_grad")
        monkeypatch.setattr(blocked, "_GROUP_ELEMENTS", group_elements)
    b, h, n, d, window, num_global, pad = case
    seed = seed_of(case, "nograd")
    q, k, v, _ = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask(pad, b, n, seed)
    with torch.no_grad():
        got = sliding_window_attention(q, k, v, window=window, num_global=num_global, key_padding_mask=kpm,
                                       backend="torch")
    ref = naive_sliding_window_attention(q, k, v, lr(window), num_global, kpm)
    assert_finite("out", got)
    assert max_err(got, ref) <= FLOOR[torch.float32], f"max err {max_err(got, ref):.3e}"


@pytest.mark.skipif(HAS_CUDA, reason="auto backend is 'triton' on CUDA")
def test_auto_backend_on_cpu_is_torch():
    q, k, v, _ = make_qkv(2, 1, 30, 16, torch.float32, 3, device="cpu")
    kw = dict(window=(2, 3), num_global=1, key_padding_mask=make_mask("lens", 2, 30, 3, device="cpu"))
    auto = sliding_window_attention(q, k, v, **kw)
    assert torch.equal(auto, sliding_window_attention(q, k, v, backend="torch", **kw))


def test_triton_is_deterministic():
    require_backend("triton")
    q, k, v, do = make_qkv(2, 1, 50, 16, torch.float32, 4)
    kw = dict(window=(5, 2), num_global=3, key_padding_mask=make_mask("holes", 2, 50, 4))
    a = fwd_bwd(lambda x, y, z: run_op(x, y, z, "triton", **kw), q, k, v, do)
    b = fwd_bwd(lambda x, y, z: run_op(x, y, z, "triton", **kw), q, k, v, do)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ------------------------------------------------------------------------------------------------
# 5. property test
# ------------------------------------------------------------------------------------------------
@st.composite
def problems(draw):
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 2))
    n = draw(st.integers(1, 80))
    d = draw(st.sampled_from([16, 32, 48]))
    # half the draws small, so narrow bands and few globals (the block-boundary cases) are common
    side = st.integers(0, min(8, n + 5)) | st.integers(0, n + 5)
    window = draw(side | st.tuples(side, side))
    num_global = draw(st.integers(0, min(3, n + 2)) | st.integers(0, n + 2))
    pad = draw(st.sampled_from([None, "lens", "random"]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return b, h, n, d, window, num_global, pad, seed


def _property_check(backend, problem):
    b, h, n, d, window, num_global, pad, seed = problem
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    g = torch.Generator().manual_seed(seed)
    if pad == "lens":
        kpm = (torch.arange(n)[None, :] < torch.randint(1, n + 1, (b,), generator=g)[:, None]).to(DEVICE)
    elif pad == "random":                          # anything, all-False rows included
        kpm = (torch.rand(b, n, generator=g) < 0.6).to(DEVICE)
    else:
        kpm = None
    check_against_reference(backend, q, k, v, do, window, num_global, kpm)


PROPERTY_SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=60, **PROPERTY_SETTINGS)
@given(problem=problems())
def test_property_torch_matches_reference(problem):
    _property_check("torch", problem)


def test_property_triton_matches_reference():
    require_backend("triton")

    @settings(max_examples=25, **PROPERTY_SETTINGS)
    @given(problem=problems())
    def prop(problem):
        _property_check("triton", problem)

    prop()


# ------------------------------------------------------------------------------------------------
# 6. argument checks
# ------------------------------------------------------------------------------------------------
def _good(n=8, d=16, dtype=torch.float32):
    return make_qkv(2, 2, n, d, dtype, 0, device="cpu")[:3]


@pytest.mark.parametrize("backend", [None, "torch", "triton", "reference"])
class TestArgumentChecks:
    def test_unknown_backend(self, backend):
        q, k, v = _good()
        with pytest.raises(ValueError, match="unknown backend"):
            sliding_window_attention(q, k, v, window=2, backend="cuda")

    @pytest.mark.parametrize("which", ["q", "k", "v"])
    def test_non_tensor_input(self, backend, which):
        args = dict(zip("qkv", _good()))
        args[which] = args[which].tolist()
        with pytest.raises(TypeError, match=f"{which} must be a torch.Tensor"):
            sliding_window_attention(args["q"], args["k"], args["v"], window=2, backend=backend)

    @pytest.mark.parametrize("shape", [(2, 2, 9, 16), (2, 3, 8, 16), (1, 2, 8, 16), (2, 2, 8, 32)],
                             ids=["seqlen", "heads", "batch", "head_dim"])
    def test_mismatched_shapes(self, backend, shape):
        q, k, v = _good()
        with pytest.raises(ValueError, match="same shape"):
            sliding_window_attention(q, torch.randn(shape), v, window=2, backend=backend)
        with pytest.raises(ValueError, match="same shape"):
            sliding_window_attention(q, k, torch.randn(shape), window=2, backend=backend)

    def test_mismatched_dtypes(self, backend):
        q, k, v = _good()
        with pytest.raises(ValueError, match="same dtype"):
            sliding_window_attention(q, k.half(), v, window=2, backend=backend)
        with pytest.raises(ValueError, match="same dtype"):
            sliding_window_attention(q, k, v.bfloat16(), window=2, backend=backend)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.int32], ids=["fp64", "int32"])
    def test_unsupported_dtype(self, backend, dtype):
        q, k, v = (t.to(dtype) for t in _good())
        with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
            sliding_window_attention(q, k, v, window=2, backend=backend)

    @pytest.mark.parametrize("shape", [(2, 8, 16), (2, 2, 2, 8, 16), (16,)], ids=["3d", "5d", "1d"])
    def test_wrong_rank(self, backend, shape):
        x = torch.randn(shape)
        with pytest.raises(ValueError, match=r"\(batch, heads, seqlen, head_dim\)"):
            sliding_window_attention(x, x, x, window=2, backend=backend)

    def test_empty_sequence(self, backend):
        x = torch.randn(2, 2, 0, 16)
        with pytest.raises(ValueError, match=">= 1"):
            sliding_window_attention(x, x, x, window=2, backend=backend)

    @pytest.mark.parametrize("d", [8, 15, 129, 256])
    def test_bad_head_dim(self, backend, d):
        q, k, v = _good(d=d)
        with pytest.raises(ValueError, match="head_dim"):
            sliding_window_attention(q, k, v, window=2, backend=backend)

    @pytest.mark.parametrize("window", [-1, (-1, 2), (2, -1)], ids=["-1", "(-1,2)", "(2,-1)"])
    def test_negative_window(self, backend, window):
        q, k, v = _good()
        with pytest.raises(ValueError, match=">= 0"):
            sliding_window_attention(q, k, v, window=window, backend=backend)

    @pytest.mark.parametrize("window", [1.5, 2.0, (1, 2, 3), (1,), True, False, (True, 1), (1, 2.0), "3",
                                        None, torch.tensor(2)],
                             ids=["1.5", "2.0", "3-tuple", "1-tuple", "True", "False", "(True,1)", "(1,2.0)",
                                  "str", "None", "tensor"])
    def test_window_wrong_type(self, backend, window):
        q, k, v = _good()
        with pytest.raises(ValueError, match="window must be an int or a"):
            sliding_window_attention(q, k, v, window=window, backend=backend)

    @pytest.mark.parametrize("num_global", [-1, 1.0, True, None, "2"],
                             ids=["-1", "1.0", "True", "None", "str"])
    def test_bad_num_global(self, backend, num_global):
        q, k, v = _good()
        with pytest.raises(ValueError, match="num_global"):
            sliding_window_attention(q, k, v, window=2, num_global=num_global, backend=backend)

    @pytest.mark.parametrize("num_global,num_global_queries", [
        (2, -1), (2, 3), (0, 1), (20, 21), (2, 1.0), (2, True), (2, False), (2, "1"), (2, torch.tensor(1)),
    ], ids=["-1", "G+1", "G=0", "G>N,G+1", "1.0", "True", "False", "str", "tensor"])
    def test_bad_num_global_queries(self, backend, num_global, num_global_queries):
        q, k, v = _good()
        with pytest.raises(ValueError, match=r"num_global_queries must be None or an int in \[0, num_global\]"):
            sliding_window_attention(q, k, v, window=2, num_global=num_global,
                                     num_global_queries=num_global_queries, backend=backend)

    @pytest.mark.parametrize("shape", [(2, 9), (1, 8), (2, 1, 8), (8,), (2, 2, 8, 8)],
                             ids=["seqlen+1", "batch1", "3d", "1d", "4d"])
    def test_mask_wrong_shape(self, backend, shape):
        q, k, v = _good()
        with pytest.raises(ValueError, match="key_padding_mask must have shape"):
            sliding_window_attention(q, k, v, window=2, key_padding_mask=torch.ones(shape, dtype=torch.bool),
                                     backend=backend)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32],
                             ids=["int64", "uint8", "fp32"])
    def test_mask_wrong_dtype(self, backend, dtype):
        q, k, v = _good()
        with pytest.raises(ValueError, match="bool"):
            sliding_window_attention(q, k, v, window=2, key_padding_mask=torch.ones(2, 8, dtype=dtype),
                                     backend=backend)

    def test_mask_not_a_tensor(self, backend):
        # the docstring allows either reading: "ValueError: bad ... mask" / "TypeError: a non-tensor input"
        q, k, v = _good()
        with pytest.raises((ValueError, TypeError), match="key_padding_mask"):
            sliding_window_attention(q, k, v, window=2, key_padding_mask=[[True] * 8] * 2, backend=backend)

    @needs_cuda
    def test_mixed_devices(self, backend):
        q, k, v = _good()
        with pytest.raises(ValueError, match="same device"):
            sliding_window_attention(q, k.cuda(), v, window=2, backend=backend)
        with pytest.raises(ValueError, match="key_padding_mask is on"):
            sliding_window_attention(q, k, v, window=2, backend=backend,
                                     key_padding_mask=torch.ones(2, 8, dtype=torch.bool, device="cuda"))


_NO_INTERPRET_SCRIPT = r"""
import torch
from longread.kernels import sliding_window_attention
q = torch.randn(1, 1, 8, 16)
try:
    sliding_window_attention(q, q, q, window=2, backend="triton")
except RuntimeError as e:
    assert "TRITON_INTERPRET" in str(e), str(e)
    print("RuntimeError:", e)
    raise SystemExit(0)
raise SystemExit("expected RuntimeError, got none")
"""


@pytest.mark.parametrize("interpret", [None, "0", ""], ids=["unset", "0", "empty"])
def test_triton_on_cpu_without_interpreter_raises(interpret):
    """TRITON_INTERPRET is read at import, so this runs in a fresh interpreter with the variable unset."""
    pytest.importorskip("triton")
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    proc = subprocess.run([sys.executable, "-c", _NO_INTERPRET_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "needs CUDA tensors" in proc.stdout


# ------------------------------------------------------------------------------------------------
# 7. GPU-only
# ------------------------------------------------------------------------------------------------
@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [
    (2, 4, 2048, 64, 256, 64, "lens"),
    (1, 2, 4099, 128, (300, 17), 100, "holes"),
    (2, 2, 1000, 80, (0, 511), 0, "lens"),
    (2, 2, 3000, 64, 0, 1, None),
    (2, 2, 1000, 64, (126, 62), 65, "holes"),     # sides / G around multiples of the GPU block sizes
    (1, 2, 1500, 128, (63, 129), 127, "lens"),
], ids=case_id)
def test_triton_gpu_large(dtype, case):
    require_backend("triton", dtype)
    b, h, n, d, window, num_global, pad = case
    seed = seed_of(case, DTYPE_IDS[dtype], "gpu")
    q, k, v, do = make_qkv(b, h, n, d, dtype, seed)
    kpm = make_mask(pad, b, n, seed)
    check_against_reference("triton", q, k, v, do, window, num_global, kpm)
    check_against_reference("torch", q, k, v, do, window, num_global, kpm)


@gpu
@needs_cuda
def test_triton_gpu_fp32_is_not_tf32():
    """fp32 inputs promise an exact fp32 path (input_precision='ieee'): held to the fp32 floor."""
    q, k, v, do = make_qkv(1, 2, 1024, 64, torch.float32, 11)
    check_against_reference("triton", q, k, v, do, (128, 64), 16, make_mask("lens", 1, 1024, 11))


# ------------------------------------------------------------------------------------------------
# 8. num_global_queries: key-only global rows
# ------------------------------------------------------------------------------------------------
# (B, H, N, D, window, G, GQ, padding); GQ = num_global_queries
GQ_CASES = [
    (1, 1, 1, 16, 0, 1, 0, None),                 # seqlen 1, one key-only global
    (2, 1, 37, 16, (1, 2), 17, 0, None),          # G straddles a block, no full rows
    (2, 1, 71, 16, (5, 3), 20, 0, "lens"),
    (2, 2, 71, 32, 4, 20, 20, "holes"),           # GQ = G: the Longformer mask
    (2, 1, 129, 16, (17, 3), 33, 5, "lens"),      # GQ inside the first block
    (1, 2, 129, 24, (0, 9), 40, 17, None),        # GQ and G both straddle block boundaries
    (2, 1, 97, 16, 0, 48, 16, "holes"),           # window 0, G and GQ on block boundaries
    (2, 1, 150, 16, (2, 1), 40, 0, "holes"),      # the first rows' band ends inside the global keys
    (2, 1, 129, 32, (3, 20), 129, 64, "lens"),    # every key global, half the rows full
    (2, 1, 45, 16, 2, 200, 7, "lens"),            # G > seqlen, GQ < seqlen
    (2, 1, 45, 16, (3, 1), 200, 60, None),        # seqlen < GQ < G: every row full
]
# fp16 Triton on the interpreter for a few cases only (each case costs seconds there)
GQ_TRITON_FP16 = {GQ_CASES[2], GQ_CASES[5], GQ_CASES[7]}


def gq_case_id(c):
    b, h, n, d, w, g, gq, pad = c
    return case_id((b, h, n, d, w, g, pad)) + f"-gq{gq}"


def _in_gq_grid(backend, dtype, case):
    if backend == "triton" and dtype == torch.float16 and not HAS_CUDA:
        return case in GQ_TRITON_FP16
    return True


GQ_GRID = [pytest.param(be, dt, c, id=f"{be}-{DTYPE_IDS[dt]}-{gq_case_id(c)}")
           for be in ("torch", "triton", "reference") for dt in DTYPES_BY_BACKEND[be] for c in GQ_CASES
           if _in_gq_grid(be, dt, c)]


@pytest.mark.parametrize("backend,dtype,case", GQ_GRID)
def test_num_global_queries_matches_fp32_reference(backend, dtype, case):
    """Forward and dq, dk, dv against the dense fp32 reference with the same num_global_queries."""
    require_backend(backend, dtype)
    b, h, n, d, window, num_global, gq, pad = case
    seed = seed_of(case, DTYPE_IDS[dtype], "gq")
    q, k, v, do = make_qkv(b, h, n, d, dtype, seed)
    kpm = make_mask(pad, b, n, seed)
    check_against_reference(backend, q, k, v, do, window, num_global, kpm, num_global_queries=gq)


@pytest.mark.parametrize("case", [pytest.param(c, id=gq_case_id(c)) for c in GQ_CASES])
def test_num_global_queries_reference_vs_sdpa_oracle(case):
    """The reference (backend and naive.py) against SDPA on a mask written from the docstring."""
    b, h, n, d, window, num_global, gq, pad = case
    seed = seed_of(case, "gq-sdpa")
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask(pad, b, n, seed)
    left, right = lr(window)
    allowed = docstring_mask(b, n, left, right, num_global, kpm, num_global_queries=gq)
    want = fwd_bwd(lambda a, b_, c: sdpa_oracle(a, b_, c, allowed), q, k, v, do)
    got = fwd_bwd(lambda a, b_, c: sliding_window_attention(
        a, b_, c, window=window, num_global=num_global, num_global_queries=gq, key_padding_mask=kpm,
        backend="reference"), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        assert_finite(name, g)
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_attention_mask_num_global_queries_matches_bruteforce():
    n = 13
    kpm = torch.tensor([[True] * 13, [True] * 5 + [False] * 8, [i % 3 != 1 for i in range(13)]])
    for left, right, num_global, gq in [(0, 0, 3, 0), (2, 0, 5, 2), (0, 3, 5, 5), (1, 1, 20, 4), (1, 2, 20, 0),
                                        (4, 1, 0, 0), (20, 20, 6, 1)]:
        brute = torch.zeros(3, 1, n, n, dtype=torch.bool)
        for bb in range(3):
            for i in range(n):
                for j in range(n):
                    in_band = i - left <= j <= i + right
                    brute[bb, 0, i, j] = bool(kpm[bb, i] and kpm[bb, j] and (in_band or j < num_global or i < gq))
        assert torch.equal(attention_mask(n, left, right, num_global, kpm, num_global_queries=gq), brute)
        assert torch.equal(docstring_mask(3, n, left, right, num_global, kpm, num_global_queries=gq), brute)
        assert torch.equal(attention_mask(n, left, right, num_global, num_global_queries=gq), brute[0, 0])
        if gq == num_global:
            assert torch.equal(attention_mask(n, left, right, num_global, kpm), brute)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_num_global_queries_default_is_num_global(backend):
    """None (the default) and num_global_queries=num_global give bit-identical results and gradients,
    also when num_global exceeds seqlen (both are clamped to it)."""
    require_backend(backend)
    b, h, n, d = 2, 1, 40, 16
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("gq-default"))
    kpm = make_mask("holes", b, n, seed_of("gq-default"))
    for num_global, gq in ((0, 0), (5, 5), (17, 17), (60, 60), (60, 40)):
        kw = dict(window=(3, 2), key_padding_mask=kpm)
        a = fwd_bwd(lambda x, y, z: run_op(x, y, z, backend, num_global=num_global, **kw), q, k, v, do)
        c = fwd_bwd(lambda x, y, z: run_op(x, y, z, backend, num_global=num_global, num_global_queries=gq, **kw),
                    q, k, v, do)
        for name, x, y in zip(("out", "dq", "dk", "dv"), a, c):
            assert torch.equal(x, y), f"{name}: G={num_global}, GQ={gq}"


@pytest.mark.parametrize("gq", [0, 3, 45], ids=["gq0", "gq3", "gq45"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_global_keys_covering_sequence_is_full_attention_for_any_gq(backend, gq):
    """G >= seqlen makes every key global, so every row sees every key whatever GQ is."""
    require_backend(backend)
    b, h, n, d = 1, 2, 45, 16
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("gq-full", gq))
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=0, num_global=n + 5, num_global_queries=gq),
                  q, k, v, do)
    want = fwd_bwd(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c), q, k, v, do)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_num_global_queries_rows_without_allowed_keys_are_zero(backend):
    """Padded rows (holes, and a batch row with every key padded) stay zero with zero gradients when
    some global rows are key-only."""
    require_backend(backend)
    b, h, n, d = 2, 2, 40, 32
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("gq-empty"))
    kpm = torch.ones(b, n, dtype=torch.bool, device=DEVICE)
    kpm[0, 3::4] = False
    kpm[0, 1] = False               # a padded key-only global row
    kpm[1] = False
    for window, num_global, gq in ((0, 5, 0), ((0, 2), 8, 3), (3, 50, 0), (0, 50, 20)):
        out, dq, dk, dv = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, window=window, num_global=num_global,
                                                          num_global_queries=gq, key_padding_mask=kpm),
                                  q, k, v, do)
        allowed = docstring_mask(b, n, *lr(window), num_global, kpm, num_global_queries=gq)
        empty = ~allowed.any(-1)[..., None].expand_as(out)
        assert empty[0].any() and empty[1].all()
        for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
            assert_finite(f"{name} window={window} G={num_global} GQ={gq}", t)
        assert (out[empty] == 0).all() and (dq[empty] == 0).all()
        padded_keys = ~kpm[:, None, :, None].expand_as(dk)
        assert (dk[padded_keys] == 0).all() and (dv[padded_keys] == 0).all()
        ref = fwd_bwd(lambda a, b_, c: naive_sliding_window_attention(a, b_, c, lr(window), num_global, kpm,
                                                                      num_global_queries=gq), q, k, v, do)
        for name, g, r in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_broken_num_global_queries_variants_are_caught(backend):
    """The comparisons above would catch the likely mistakes: key-only rows treated as full rows
    (num_global_queries ignored), and their gradient into the band and global keys dropped."""
    require_backend(backend)
    b, h, n, d, window, num_global, gq = 2, 1, 70, 16, (3, 2), 24, 5
    seed = seed_of("gq-broken")
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask("lens", b, n, seed)
    got = check_against_reference(backend, q, k, v, do, window, num_global, kpm, num_global_queries=gq)
    key_only = torch.zeros(n, dtype=torch.bool, device=DEVICE)
    key_only[gq:num_global] = True
    key_only = key_only[None, None, :, None] & kpm[:, None, :, None]        # real key-only global rows

    # 1. num_global_queries treated as num_global: exactly the key-only rows differ
    as_full = naive_sliding_window_attention(q, k, v, lr(window), num_global, kpm)
    assert max_err(got[0][key_only.expand_as(got[0])], as_full[key_only.expand_as(as_full)]) > 1e-2
    assert max_err(got[0][~key_only.expand_as(got[0])], as_full[~key_only.expand_as(as_full)]) <= FLOOR[torch.float32]

    # 2. key-only rows' gradient into k and v dropped (rows computed from detached k, v)
    def dropped(a, b_, c):
        full = naive_sliding_window_attention(a, b_, c, lr(window), num_global, kpm, num_global_queries=gq)
        cut = naive_sliding_window_attention(a, b_.detach(), c.detach(), lr(window), num_global, kpm,
                                             num_global_queries=gq)
        return torch.where(key_only, cut, full)

    broken = fwd_bwd(dropped, q, k, v, do)
    assert max_err(got[0], broken[0]) <= FLOOR[torch.float32]                # same forward
    for name, i in (("dk", 2), ("dv", 3)):
        # the band keys right after the globals, and the global keys, both lose gradient
        for keys in (slice(0, num_global), slice(num_global, num_global + window[0] + 1)):
            assert max_err(got[i][:, :, keys], broken[i][:, :, keys]) > 1e-3, f"{name}[{keys}] misses the cut"


def _visit_block(backend, left, right, n):
    """The largest query / key block the backend may use (the visited-block bounds below are in
    units of it), and whether a block that starts below GQ makes all its rows full rows."""
    if backend == "torch":
        from longread.kernels.sliding_window.blocked import _pick_block
        return _pick_block(left, right, n), False
    from longread.kernels.sliding_window.utils import BWD_DKDV_CONFIGS, BWD_DQ_CONFIGS, FWD_CONFIGS
    cfgs = FWD_CONFIGS + BWD_DKDV_CONFIGS + BWD_DQ_CONFIGS
    return max(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in cfgs), True


def _may_pair(i, j, left, right, num_global, gq, blk, full_by_block):
    """A superset of the (query row, key) pairs the backend's blocks may bring together when rows
    >= GQ visit only the global keys and their band: False means query i and key j never meet."""
    r0, j0 = (i // blk) * blk, (j // blk) * blk
    full_row = (r0 if full_by_block else i) < gq
    near = j0 + 2 * blk > r0 - left and j0 < r0 + 2 * blk + right
    return full_row or j0 < num_global or near


N_VISIT = 1001 if HAS_CUDA else 197
VISIT_CASES = [(40, 0), (40, 16), (24, 5), (33, 33), (0, 0)]


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered")  # the interpreter's max over NaN rows
@pytest.mark.parametrize("num_global,gq", VISIT_CASES, ids=[f"g{g}-gq{q}" for g, q in VISIT_CASES])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_band_rows_never_visit_far_key_blocks(backend, num_global, gq):
    """NaN keys and values far from a row's band poison any block that loads them (0 * NaN = NaN), so
    the rows >= GQ (key-only global rows included) that are far from them must stay finite and exact,
    in the output and in dq: they visit only the global key blocks and their band, never every key."""
    require_backend(backend)
    b, h, n, d, (left, right) = 1, 1, N_VISIT, 16, (3, 2)
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("visit-fwd", num_global, gq))
    bad = list(range(int(0.8 * n), int(0.8 * n) + 4))
    k_nan, v_nan = k.clone(), v.clone()
    k_nan[:, :, bad], v_nan[:, :, bad] = float("nan"), float("nan")
    kw = dict(window=(left, right), num_global=num_global, num_global_queries=gq)
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, **kw), q, k_nan, v_nan, do)
    ref = fwd_bwd(lambda a, b_, c: naive_sliding_window_attention(a, b_, c, (left, right), num_global,
                                                                  num_global_queries=gq), q, k, v, do)
    blk, by_block = _visit_block(backend, left, right, n)
    rows = [i for i in range(n) if not any(_may_pair(i, j, left, right, num_global, gq, blk, by_block) for j in bad)]
    assert len(rows) >= n // 8
    key_only = [i for i in rows if gq <= i < num_global]
    if num_global > gq and (not by_block or any((i // blk) * blk >= gq for i in range(gq, num_global))):
        assert key_only, "no key-only global row checked"
    for name, g, r in (("out", got[0], ref[0]), ("dq", got[1], ref[1])):
        assert_finite(f"{name} rows {rows[0]}..{rows[-1]}", g[:, :, rows])
        assert max_err(g[:, :, rows], r[:, :, rows]) <= FLOOR[torch.float32], name


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered")  # the interpreter's max over NaN rows
@pytest.mark.parametrize("num_global,gq", VISIT_CASES, ids=[f"g{g}-gq{q}" for g, q in VISIT_CASES])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_far_key_blocks_never_visit_band_rows(backend, num_global, gq):
    """A NaN query row r >= GQ (the last key-only global row when there is one) poisons every key
    block whose dk, dv loop loads it: the band keys far from r must keep finite, exact gradients,
    so a key block past G visits only the full rows (< GQ) and its mirrored band. dq of every other
    row must be untouched too."""
    require_backend(backend)
    b, h, n, d, (left, right) = 1, 1, N_VISIT, 16, (3, 2)
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed_of("visit-bwd", num_global, gq))
    r = num_global - 1 if num_global > gq else num_global + 5
    q_nan, do_nan = q.clone(), do.clone()
    q_nan[:, :, r], do_nan[:, :, r] = float("nan"), float("nan")
    kw = dict(window=(left, right), num_global=num_global, num_global_queries=gq)
    got = fwd_bwd(lambda a, b_, c: run_op(a, b_, c, backend, **kw), q_nan, k, v, do_nan)
    ref = fwd_bwd(lambda a, b_, c: naive_sliding_window_attention(a, b_, c, (left, right), num_global,
                                                                  num_global_queries=gq), q, k, v, do)
    blk, by_block = _visit_block(backend, left, right, n)
    keys = [j for j in range(n) if not _may_pair(r, j, left, right, num_global, gq, blk, by_block)]
    if not by_block or (r // blk) * blk >= gq:
        assert len(keys) >= n // 4
    for name, g, w in (("dk", got[2], ref[2]), ("dv", got[3], ref[3])):
        assert_finite(f"{name} keys far from row {r}", g[:, :, keys])
        assert max_err(g[:, :, keys], w[:, :, keys]) <= FLOOR[torch.float32], name
    others = [i for i in range(n) if i != r]
    assert_finite("dq of the other rows", got[1][:, :, others])
    assert max_err(got[1][:, :, others], ref[1][:, :, others]) <= FLOOR[torch.float32]


GQ_BOUNDARY = [((15, 15), 17, 16), ((16, 16), 32, 31), ((1, 31), 33, 1), ((14, 0), 48, 32), ((0, 14), 31, 15),
               ((2, 2), 64, 0), ((31, 30), 47, 17), ((1, 1), 70, 64), ((3, 3), 70, 70)]


@pytest.mark.parametrize("window,num_global,gq", GQ_BOUNDARY,
                         ids=[f"w{w[0]}-{w[1]}-g{g}-gq{q}" for w, g, q in GQ_BOUNDARY])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_num_global_queries_block_boundaries(backend, window, num_global, gq):
    """G and GQ just around multiples of 16 (the interpreter's block) and 32 (the torch path's)."""
    require_backend(backend)
    b, h, n, d = 2, 1, 70, 16
    seed = seed_of("gq-boundary", window, num_global, gq)
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    check_against_reference(backend, q, k, v, do, window, num_global, make_mask("lens", b, n, seed),
                            num_global_queries=gq)


@pytest.mark.parametrize("group_elements", [None, 1], ids=["default", "one-block-groups"])
@pytest.mark.parametrize("case", [pytest.param(c, id=gq_case_id(c)) for c in GQ_CASES if c[2] > 1])
def test_torch_backend_num_global_queries_under_no_grad(case, group_elements, monkeypatch):
    import longread.kernels.sliding_window.blocked as blocked
    if group_elements is not None:
        monkeypatch.setattr(blocked, "_GROUP_ELEMENTS", group_elements)
    b, h, n, d, window, num_global, gq, pad = case
    seed = seed_of(case, "gq-nograd")
    q, k, v, _ = make_qkv(b, h, n, d, torch.float32, seed)
    kpm = make_mask(pad, b, n, seed)
    with torch.no_grad():
        got = sliding_window_attention(q, k, v, window=window, num_global=num_global, num_global_queries=gq,
                                       key_padding_mask=kpm, backend="torch")
    ref = naive_sliding_window_attention(q, k, v, lr(window), num_global, kpm, num_global_queries=gq)
    assert_finite("out", got)
    assert max_err(got, ref) <= FLOOR[torch.float32], f"max err {max_err(got, ref):.3e}"


@st.composite
def gq_problems(draw):
    b, h, n, d, window, num_global, pad, seed = draw(problems())
    gq = draw(st.integers(0, min(num_global, 3)) | st.integers(0, num_global))
    return b, h, n, d, window, num_global, gq, pad, seed


def _gq_property_check(backend, problem):
    b, h, n, d, window, num_global, gq, pad, seed = problem
    q, k, v, do = make_qkv(b, h, n, d, torch.float32, seed)
    g = torch.Generator().manual_seed(seed)
    if pad == "lens":
        kpm = (torch.arange(n)[None, :] < torch.randint(1, n + 1, (b,), generator=g)[:, None]).to(DEVICE)
    elif pad == "random":
        kpm = (torch.rand(b, n, generator=g) < 0.6).to(DEVICE)
    else:
        kpm = None
    check_against_reference(backend, q, k, v, do, window, num_global, kpm, num_global_queries=gq)


@settings(max_examples=40, **PROPERTY_SETTINGS)
@given(problem=gq_problems())
def test_property_num_global_queries_torch(problem):
    _gq_property_check("torch", problem)


def test_property_num_global_queries_triton():
    require_backend("triton")

    @settings(max_examples=15, **PROPERTY_SETTINGS)
    @given(problem=gq_problems())
    def prop(problem):
        _gq_property_check("triton", problem)

    prop()


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", [
    (2, 4, 2048, 64, 256, 64, 1, "lens"),
    (1, 2, 4099, 128, (300, 17), 200, 0, "holes"),
    (2, 2, 1000, 64, (126, 62), 129, 65, "holes"),
], ids=gq_case_id)
def test_triton_gpu_large_num_global_queries(dtype, case):
    require_backend("triton", dtype)
    b, h, n, d, window, num_global, gq, pad = case
    seed = seed_of(case, DTYPE_IDS[dtype], "gq-gpu")
    q, k, v, do = make_qkv(b, h, n, d, dtype, seed)
    kpm = make_mask(pad, b, n, seed)
    check_against_reference("triton", q, k, v, do, window, num_global, kpm, num_global_queries=gq)
    check_against_reference("torch", q, k, v, do, window, num_global, kpm, num_global_queries=gq)
