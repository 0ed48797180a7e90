"""Microbenchmark: ``sliding_window_attention`` against FlexAttention, dense SDPA, HF Longformer
and flash-attn, on the same inputs, in one run.

Run as::

    python -m longread.kernels.sliding_window.benchmark [options]

What is measured, per (system, seqlen, window, G, head_dim) row:

* ``fwd ms``: median forward time (under ``torch.no_grad()``);
* ``fwd+bwd ms``: median time of a forward plus ``torch.autograd.grad`` of a fixed random
  output gradient w.r.t. the inputs (q, k, v; for Longformer the hidden states);
* ``peak MB``: on CUDA, ``torch.cuda.max_memory_allocated()`` during one fwd+bwd call minus the
  memory allocated just before it (inputs and the output gradient are not counted; the output
  and the gradients are). On CPU PyTorch exposes no allocator peak and the process RSS high-water
  mark is not a per-call measurement, so the column says ``n/a``;
* useful TFLOP/s: only (query, key) pairs allowed by the mask are counted, the pair count is
  exact (closed form, :func:`useful_pairs`); forward FLOPs = ``4 * pairs * head_dim * batch *
  heads`` (QK^T and PV, 2 FLOPs per multiply-add), backward = 2.5 x forward (the usual
  convention: 5 matmuls instead of 2), so fwd+bwd = 3.5 x forward. Dense SDPA does N^2 work but
  is credited with the same useful FLOPs, so its TFLOP/s is directly comparable;
* ``x flex``: FlexAttention time / this system's time on the same row (> 1 = faster than Flex);
* ``max err``: max |out - ref| against the dense fp32 reference (``naive.py``) when
  ``batch*heads*seqlen^2`` is small enough, otherwise against the FlexAttention output.

Systems (``--systems``): ``triton`` (longread Triton kernels, CUDA only), ``torch`` (longread
blocked PyTorch path), ``naive`` (longread dense fp32 reference, small sizes only), ``flex``
(``flex_attention`` + ``create_block_mask`` with the same mask; ``torch.compile``'d on CUDA, eager
on CPU; the block-mask build is timed separately), ``sdpa`` (dense
``scaled_dot_product_attention``, full attention: the physical reference; independent of window
and G, measured once per (seqlen, head_dim)), ``longformer`` (transformers'
``LongformerSelfAttention``, attention_window = 2*window, global attention on the first G tokens;
its time includes the q/k/v (and global q/k/v) projections), ``flash`` (``flash_attn_func`` with
``window_size=(left, right)`` if ``flash_attn`` imports; it has no global tokens, so it always
runs the G=0 mask, measured once per (seqlen, window, head_dim)).

Without CUDA (or with ``--quick`` on CPU) a small fp32 sweep runs in well under a minute; the
full GPU sweep (seqlen up to 1M) takes a long time, mostly in FlexAttention compiles.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from longread.kernels.sliding_window.attention import sliding_window_attention
from longread.kernels.sliding_window.naive import naive_sliding_window_attention

MODULE = "longread.kernels.sliding_window.benchmark"

# canonical system names, in the order they run inside one configuration (flex first: its output
# is the fallback correctness reference for the others)
SYSTEMS = ("flex", "longread-triton", "longread-torch", "naive", "sdpa", "longformer", "flash-attn")
ALIASES = {
    "flex": "flex", "flexattention": "flex", "flex_attention": "flex",
    "triton": "longread-triton", "longread-triton": "longread-triton",
    "torch": "longread-torch", "blocked": "longread-torch", "longread-torch": "longread-torch",
    "naive": "naive", "reference": "naive", "ref": "naive",
    "sdpa": "sdpa", "dense": "sdpa",
    "longformer": "longformer", "hf-longformer": "longformer",
    "flash": "flash-attn", "flash-attn": "flash-attn", "flash_attn": "flash-attn",
}
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
          "float32": torch.float32, "float": torch.float32}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}

BWD_FACTOR = 2.5          # backward FLOPs = 2.5 x forward FLOPs (convention)

GPU_DEFAULTS = dict(seqlens=[4096, 16384, 65536, 262144, 1048576], windows=["256", "512", "1024"],
                    head_dims=[64, 128], globals_=[0, 64, 1024], dtype="bf16", batch=1, heads=16)
GPU_QUICK = dict(seqlens=[4096, 16384], windows=["256"], head_dims=[64, 128], globals_=[0, 64],
                 dtype="bf16", batch=1, heads=16)
CPU_QUICK = dict(seqlens=[256, 1024, 4096], windows=["64", "128"], head_dims=[32, 64],
                 globals_=[0, 16], dtype="fp32", batch=1, heads=2)


# ------------------------------------------------------------------------------------------
# Useful-FLOP accounting
# ------------------------------------------------------------------------------------------
def _clamp_mask_args(seqlen: int, left: int, right: int, num_global: int) -> Tuple[int, int, int]:
    if seqlen < 0 or left < 0 or right < 0 or num_global < 0:
        raise ValueError("seqlen, left, right and num_global must be >= 0")
    last = max(seqlen - 1, 0)
    return min(left, last), min(right, last), min(num_global, seqlen)


def _range_sum(a: int, b: int) -> int:
    """Sum of the integers a..b (0 when b < a)."""
    return (a + b) * (b - a + 1) // 2 if b >= a else 0


def useful_pairs(seqlen: int, left: int, right: int, num_global: int = 0) -> int:
    """Exact number of allowed (query i, key j) pairs, closed form, O(1).

    Allowed iff ``i - left <= j <= i + right`` or ``i < G`` or ``j < G`` (no padding), the mask of
    ``sliding_window_attention`` / ``naive.attention_mask``. Global query rows see all ``N`` keys.
    A non-global row ``i >= G`` sees the ``G`` global keys plus the band keys
    ``[max(G, i-left), min(N-1, i+right)]``, which is never empty (it holds ``i``).
    """
    n = seqlen
    if n == 0:
        return 0
    left, right, g = _clamp_mask_args(n, left, right, num_global)
    total = g * n                                   # global query rows
    if g >= n:
        return total
    rows = n - g                                    # rows g..n-1
    total += rows * g                               # their global keys
    # sum over i in [g, n-1] of min(n-1, i+right): i+right while i <= n-1-right, else n-1
    t = n - 1 - right
    hi = _range_sum(g + right, min(t, n - 1) + right) if min(t, n - 1) >= g else 0
    hi += max(0, (n - 1) - max(g, t + 1) + 1) * (n - 1)
    # sum over i in [g, n-1] of max(g, i-left): g while i <= g+left, else i-left
    u = g + left
    lo = (min(u, n - 1) - g + 1) * g
    lo += _range_sum(u + 1 - left, n - 1 - left) if u + 1 <= n - 1 else 0
    return total + hi - lo + rows


def useful_pairs_linear(seqlen: int, left: int, right: int, num_global: int = 0) -> int:
    """Same count as :func:`useful_pairs` by an O(N) vectorised pass over the rows (a cross-check)."""
    n = seqlen
    if n == 0:
        return 0
    left, right, g = _clamp_mask_args(n, left, right, num_global)
    i = torch.arange(n, dtype=torch.int64)
    lo = torch.clamp(i - left, min=g)
    hi = torch.clamp(i + right, max=n - 1)
    band = torch.clamp(hi - lo + 1, min=0)
    per_row = torch.where(i < g, torch.full_like(i, n), band + g)
    return int(per_row.sum())


def attention_flops(pairs: int, head_dim: int, batch: int, heads: int) -> Tuple[float, float]:
    """(forward FLOPs, forward+backward FLOPs) for ``pairs`` useful (query, key) pairs."""
    fwd = 4.0 * pairs * head_dim * batch * heads
    return fwd, fwd * (1.0 + BWD_FACTOR)


# ------------------------------------------------------------------------------------------
# Timing and memory
# ------------------------------------------------------------------------------------------
class Skip(Exception):
    """A system cannot run this configuration; the message is recorded in the row."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _free(device: torch.device, force: bool = False) -> None:
    """Drop cached memory between runs. ``gc.collect`` costs ~0.1 s with torch + transformers
    loaded, so on CPU (where refcounting already frees tensors) it only runs after an error."""
    if device.type == "cuda" or force:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timing:
    median_ms: float
    first_ms: float
    reps: int
    samples_ms: List[float]


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
            budget_s: float, keep_first: bool = False):
    """First call (compile/autotune included, reported separately), ``warmup`` untimed calls, then
    up to ``repeats`` timed calls (fewer when they would exceed ``budget_s``; at least one).
    CUDA: one pair of ``torch.cuda.Event`` per call; CPU: ``time.perf_counter``. The first call is
    never a sample (eager FlexAttention, for one, is several times slower on a new shape). Returns the
    :class:`Timing` (median), and with ``keep_first`` also the first call's result."""
    _sync(device)
    t0 = time.perf_counter()
    first = fn()
    _sync(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    if not keep_first:
        first = None
    est_ms = first_ms
    if warmup > 0:
        t0 = time.perf_counter()
        done = 0
        for _ in range(warmup):
            out = fn()
            del out
            done += 1
            if device.type != "cuda" and (time.perf_counter() - t0) > budget_s:
                break
        _sync(device)
        est_ms = (time.perf_counter() - t0) * 1e3 / done
    reps = max(1, min(repeats, int(budget_s * 1e3 / max(est_ms, 1e-3))))
    samples: List[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(reps)]
        for start, end in events:
            start.record()
            out = fn()  # noqa: F841 -- freed after end.record(), so the free is not timed
            end.record()
            del out
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()                                  # the result is dropped at once, as with `del out`
            samples.append((time.perf_counter() - t0) * 1e3)
    timing = Timing(statistics.median(samples), first_ms, reps, samples)
    return (timing, first) if keep_first else timing


def cuda_peak_mb(fn: Callable[[], object], device: torch.device) -> Tuple[float, float]:
    """(peak allocated during one call minus allocated before it, absolute peak), in MiB."""
    torch.cuda.synchronize(device)
    _free(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return (peak - base) / 2 ** 20, peak / 2 ** 20


# ------------------------------------------------------------------------------------------
# Systems
# ------------------------------------------------------------------------------------------
@dataclass
class Config:
    seqlen: int
    left: int
    right: int
    num_global: int
    head_dim: int
    batch: int
    heads: int
    dtype: torch.dtype
    device: torch.device

    @property
    def window_str(self) -> str:
        return str(self.left) if self.left == self.right else f"{self.left}:{self.right}"


@dataclass
class Runner:
    """``fwd()`` returns the output as (B, H, N, D) (no grad); ``fwdbwd()`` runs fwd + backward
    (None when the system has no backward here); ``num_global`` overrides the G of the mask the
    system really computes (flash: 0)."""
    fwd: Callable[[], torch.Tensor]
    fwdbwd: Optional[Callable[[], object]]
    note: str = ""
    num_global: Optional[int] = None      # the G the system actually computes (flash: 0)
    # the (q, k, v) its output should match, when not the shared inputs (Longformer)
    ref_inputs: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
    fwdbwd_skip: str = ""
    extra: Optional[dict] = None


def _flash_available() -> Tuple[bool, str]:
    try:
        import flash_attn  # noqa: F401
        from flash_attn import flash_attn_func  # noqa: F401
        return True, getattr(flash_attn, "__version__", "?")
    except Exception as exc:  # ImportError or a broken CUDA extension
        return False, f"{type(exc).__name__}: {exc}"


def _triton_interpreting() -> bool:
    try:
        from longread.kernels.sliding_window.utils import is_interpreting
        return is_interpreting()
    except Exception:
        return False


_COMPILED_FLEX = None


def _flex_fn(compile_flex: bool):
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if not compile_flex:
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def sliding_window_mask_mod(left: int, right: int, num_global: int):
    """FlexAttention mask_mod for the op's mask: band, or a global query, or a global key."""
    def mask_mod(b, h, q_idx, kv_idx):
        in_band = (kv_idx >= q_idx - left) & (kv_idx <= q_idx + right)
        return in_band | (q_idx < num_global) | (kv_idx < num_global)
    return mask_mod


def _grad_fn(make_out: Callable[[], torch.Tensor], inputs: Sequence[torch.Tensor], grad_out: torch.Tensor):
    def run():
        out = make_out()
        return torch.autograd.grad(out, inputs, grad_out)
    return run


def _no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def run():
        with torch.no_grad():
            return fn()
    return run


def build_runner(system: str, cfg: Config, q, k, v, do, args) -> Runner:
    """Set up one system on the shared inputs q, k, v (B, H, N, D, requires_grad) and the shared
    output gradient ``do``. Raises :class:`Skip` when the system cannot run this configuration."""
    dev, n, G = cfg.device, cfg.seqlen, cfg.num_global
    window = (cfg.left, cfg.right)
    inputs = (q, k, v)

    if system in ("longread-triton", "longread-torch"):
        backend = "triton" if system == "longread-triton" else "torch"
        if backend == "triton" and dev.type != "cuda" and not _triton_interpreting():
            raise Skip("skipped: Triton backend needs CUDA (or TRITON_INTERPRET=1)")

        def out():
            return sliding_window_attention(q, k, v, window=window, num_global=G, backend=backend)
        return Runner(_no_grad(out), _grad_fn(out, inputs, do))

    if system == "naive":
        if n > args.naive_max_seqlen:
            raise Skip(f"skipped: dense fp32 reference timed only for N <= {args.naive_max_seqlen} "
                       f"(--naive-max-seqlen)")

        def out():
            return naive_sliding_window_attention(q, k, v, window, G)
        return Runner(_no_grad(out), _grad_fn(out, inputs, do), note="dense masked fp32 (naive.py)")

    if system == "sdpa":
        if n > args.dense_max_seqlen:
            raise Skip(f"skipped: too large for dense (N > {args.dense_max_seqlen}, --dense-max-seqlen)")

        def out():
            return F.scaled_dot_product_attention(q, k, v)
        return Runner(_no_grad(out), _grad_fn(out, inputs, do),
                      note="full attention (no mask), window/G-independent")

    if system == "flex":
        try:
            from torch.nn.attention.flex_attention import create_block_mask
        except ImportError as exc:
            raise Skip(f"skipped: FlexAttention unavailable ({exc})")
        compile_flex = args.flex_compile == "on" or (args.flex_compile == "auto" and dev.type == "cuda")
        mask_mod = sliding_window_mask_mod(cfg.left, cfg.right, G)
        compile_mask = compile_flex

        def build():
            return create_block_mask(mask_mod, None, None, n, n, device=dev, _compile=compile_mask)
        mask_t, block_mask = time_fn(build, dev, warmup=0, repeats=args.mask_repeats,
                                     budget_s=args.budget, keep_first=True)
        flex = _flex_fn(compile_flex)
        extra = {"mask_build_ms": mask_t.median_ms, "mask_build_first_ms": mask_t.first_ms,
                 "flex_compiled": compile_flex}
        note = "compiled" if compile_flex else "eager"
        if dev.type == "cpu":
            # FlexAttention refuses inputs that require grad on CPU (no CPU backward)
            qd, kd, vd = (t.detach() for t in inputs)

            def fwd():
                with torch.no_grad():
                    return flex(qd, kd, vd, block_mask=block_mask)
            return Runner(fwd, None, note=note, extra=extra,
                          fwdbwd_skip="fwd+bwd n/a: FlexAttention has no CPU backward")

        def out():
            return flex(q, k, v, block_mask=block_mask)
        return Runner(_no_grad(out), _grad_fn(out, inputs, do), note=note, extra=extra)

    if system == "longformer":
        return _longformer_runner(cfg, q, do, args)

    if system == "flash-attn":
        ok, info = _flash_available()
        if not ok:
            raise Skip(f"skipped: flash_attn not importable ({info})")
        if dev.type != "cuda":
            raise Skip("skipped: flash-attn needs CUDA")
        if cfg.dtype not in (torch.float16, torch.bfloat16):
            raise Skip("skipped: flash-attn supports fp16/bf16 only")
        from flash_attn import flash_attn_func

        # flash layout is (B, N, H, D); converted once, outside the timed region
        qf, kf, vf = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in inputs)
        dof = do.transpose(1, 2).contiguous()

        def out():
            return flash_attn_func(qf, kf, vf, causal=False, window_size=(cfg.left, cfg.right))
        return Runner(lambda: _no_grad(out)().transpose(1, 2), _grad_fn(out, (qf, kf, vf), dof),
                      note="no global tokens: G=0 mask", num_global=0)

    raise ValueError(f"unknown system {system!r}")


def _longformer_runner(cfg: Config, q: torch.Tensor, do: torch.Tensor, args) -> Runner:
    try:
        from transformers import LongformerConfig
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention
    except Exception as exc:
        raise Skip(f"skipped: transformers Longformer unavailable ({type(exc).__name__})")
    n, G, w = cfg.seqlen, cfg.num_global, cfg.left
    if cfg.left != cfg.right:
        raise Skip("skipped: Longformer windows are symmetric")
    if w < 1:
        raise Skip("skipped: Longformer needs window >= 1")
    if n % (2 * w) != 0:
        raise Skip(f"skipped: Longformer needs seqlen % attention_window (={2 * w}) == 0")
    if n > args.longformer_max_seqlen:
        raise Skip(f"skipped: too large for Longformer (N > {args.longformer_max_seqlen}, "
                   f"--longformer-max-seqlen)")
    B, H, D = cfg.batch, cfg.heads, cfg.head_dim
    hf_cfg = LongformerConfig(hidden_size=H * D, num_attention_heads=H, attention_window=[2 * w],
                              num_hidden_layers=1, intermediate_size=4 * H * D,
                              attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    with torch.random.fork_rng(devices=[]):          # deterministic weights, global RNG untouched
        torch.manual_seed(1)
        mod = LongformerSelfAttention(hf_cfg, layer_id=0)
    with torch.no_grad():
        # global tokens use the same projections as local ones so one reference mask applies
        for src, dst in ((mod.query, mod.query_global), (mod.key, mod.key_global),
                         (mod.value, mod.value_global)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    mod = mod.to(device=cfg.device, dtype=cfg.dtype).eval()
    for p in mod.parameters():
        p.requires_grad_(False)           # time activation gradients only, like the other systems
    # hidden states built from the shared q: (B, N, H*D)
    x = q.detach().transpose(1, 2).reshape(B, n, H * D).contiguous().requires_grad_()
    dox = do.transpose(1, 2).reshape(B, n, H * D).contiguous()
    mask = torch.zeros(B, n, device=cfg.device, dtype=cfg.dtype)
    mask[:, :G] = 1.0                    # > 0 = global attention, < 0 = padding, 0 = local
    is_masked, is_global = mask < 0, mask > 0
    has_global = G > 0

    def out():
        return mod(x, attention_mask=mask, is_index_masked=is_masked,
                   is_index_global_attn=is_global, is_global_attn=has_global)[0]

    # its own reference inputs: the projected q, k, v (fp32)
    with torch.no_grad():
        xf = x.detach().float()

        def proj(lin):
            return (xf @ lin.weight.float().t() + lin.bias.float()).view(B, n, H, D).transpose(1, 2)
        ref_in = (proj(mod.query), proj(mod.key), proj(mod.value))
    return Runner(lambda: _no_grad(out)().view(B, n, H, D).transpose(1, 2), _grad_fn(out, (x,), dox),
                  note="includes q/k/v projections; grads w.r.t. hidden states",
                  ref_inputs=ref_in)


# ------------------------------------------------------------------------------------------
# Sweep
# ------------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 4096, 16k, 1M)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def parse_window(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad window {text!r} (e.g. 256 or 256:128 for left:right)")
    left = int(m.group(1))
    return left, int(m.group(2)) if m.group(2) is not None else left


def _split(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    if values is None:
        return None
    return [p for v in values for p in str(v).split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Time sliding-window + global attention (longread) against FlexAttention, dense "
                    "SDPA, HF Longformer and flash-attn on the same inputs.")
    p.add_argument("--seqlens", nargs="+", help="sequence lengths, e.g. 4k 16k 1M (commas ok)")
    p.add_argument("--windows", nargs="+", help="one-sided windows, W or LEFT:RIGHT (commas ok)")
    p.add_argument("--head-dims", nargs="+", help="head dims (commas ok)")
    p.add_argument("--globals", nargs="+", dest="globals_", help="numbers of global tokens G (commas ok)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="input dtype (GPU default bf16, CPU fp32)")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--systems", nargs="+",
                   help="subset of: triton torch naive flex sdpa longformer flash (commas ok; default "
                        "CUDA: triton torch flex sdpa longformer flash; CPU: torch naive flex sdpa)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--quick", action="store_true",
                   help="small sweep (the default on CPU): CPU fp32 N 256/1024/4096, W 64/128, D 32/64, "
                        "G 0/16, B1 H2; CUDA bf16 N 4k/16k, W 256, D 64/128, G 0/64")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (median); CUDA 20, CPU 3")
    p.add_argument("--warmup", type=int, help="untimed calls after the first call; CUDA 3, CPU 0")
    p.add_argument("--budget", type=float,
                   help="seconds of timed calls per measurement before cutting repeats (CUDA 5, CPU 0.25)")
    p.add_argument("--mask-repeats", type=int, help="timed block-mask builds for Flex (CUDA 5, CPU 1)")
    p.add_argument("--dense-max-seqlen", type=parse_size,
                   help="largest N for dense SDPA (CUDA 64k, CPU 4k)")
    p.add_argument("--longformer-max-seqlen", type=parse_size,
                   help="largest N for Longformer (CUDA 64k, CPU 4k)")
    p.add_argument("--naive-max-seqlen", type=parse_size,
                   help="largest N at which the dense fp32 reference is timed (CUDA 4k, CPU 1k)")
    p.add_argument("--ref-max-elements", type=float,
                   help="use the dense fp32 reference for the error column while batch*heads*N^2 <= this "
                        "(CUDA 2^28, CPU 2^23); beyond it errors are vs FlexAttention")
    p.add_argument("--flex-compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile flex_attention and create_block_mask (auto: on CUDA only)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads during the run (CPU default 1: OpenMP spin-waiting collapses "
                        "under a shared/oversubscribed CPU; the CPU sweep is a smoke test, not a CPU study)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON path (default results/kernel_bench_<device>.json)")
    p.add_argument("--no-markdown", action="store_true", help="do not write the .md next to the JSON")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def resolve_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    cuda = args.device == "cuda"
    preset = (GPU_QUICK if args.quick else GPU_DEFAULTS) if cuda else CPU_QUICK
    args.quick = args.quick or not cuda
    args.seqlens = [parse_size(s) for s in _split(args.seqlens)] if args.seqlens else preset["seqlens"]
    args.windows = [parse_window(s) for s in (_split(args.windows) or preset["windows"])]
    args.head_dims = [int(s) for s in _split(args.head_dims)] if args.head_dims else preset["head_dims"]
    args.globals_ = [int(s) for s in _split(args.globals_)] if args.globals_ else preset["globals_"]
    args.dtype = DTYPES[args.dtype or preset["dtype"]]
    args.batch = args.batch or preset["batch"]
    args.heads = args.heads or preset["heads"]
    args.repeats = args.repeats if args.repeats is not None else (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 0)
    args.budget = args.budget if args.budget is not None else (5.0 if cuda else 0.25)
    args.threads = args.threads if args.threads is not None else (torch.get_num_threads() if cuda else 1)
    args.mask_repeats = args.mask_repeats if args.mask_repeats is not None else (5 if cuda else 1)
    args.dense_max_seqlen = args.dense_max_seqlen or (65536 if cuda else 4096)
    args.longformer_max_seqlen = args.longformer_max_seqlen or (65536 if cuda else 4096)
    args.naive_max_seqlen = args.naive_max_seqlen or (4096 if cuda else 1024)
    args.ref_max_elements = args.ref_max_elements or float(2 ** 28 if cuda else 2 ** 23)
    if args.systems:
        names = []
        for s in _split(args.systems):
            if s.lower() not in ALIASES:
                raise SystemExit(f"unknown system {s!r}; choose from {sorted(set(ALIASES))}")
            names.append(ALIASES[s.lower()])
        args.explicit_systems = True
    else:
        names = (["longread-triton", "longread-torch", "flex", "sdpa", "longformer", "flash-attn"] if cuda
                 else ["longread-torch", "naive", "flex", "sdpa"])
        args.explicit_systems = False
    args.systems = [s for s in SYSTEMS if s in names]
    if any(v < 0 for v in args.globals_) or any(min(w) < 0 for w in args.windows):
        raise SystemExit("windows and globals must be >= 0")
    if any(n < 1 for n in args.seqlens) or args.batch < 1 or args.heads < 1 or args.repeats < 1:
        raise SystemExit("seqlens, batch, heads and repeats must be >= 1")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "device"


def _versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for mod in ("triton", "transformers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    ok, info = _flash_available()
    out["flash_attn"] = info if ok else None
    out["cuda"] = torch.version.cuda
    return out


def _empty_row(system: str, cfg: Config) -> dict:
    return {
        "system": system, "seqlen": cfg.seqlen, "window": cfg.window_str, "left": cfg.left,
        "right": cfg.right, "num_global": cfg.num_global, "head_dim": cfg.head_dim,
        "batch": cfg.batch, "heads": cfg.heads, "dtype": DTYPE_NAMES[cfg.dtype], "status": "ok",
        "note": "", "fwd_ms": None, "fwdbwd_ms": None, "bwd_ms": None, "fwd_first_ms": None,
        "fwdbwd_first_ms": None, "fwd_reps": None, "fwdbwd_reps": None, "mask_build_ms": None,
        "mask_build_first_ms": None, "peak_fwd_mb": None, "peak_fwdbwd_mb": None,
        "peak_fwdbwd_abs_mb": None,
        "peak_mem_source": ("torch.cuda.max_memory_allocated minus allocated before the call"
                            if cfg.device.type == "cuda" else "n/a (CPU: no per-call allocator peak)"),
        "mask_num_global": cfg.num_global, "useful_pairs": None, "fwd_flops": None,
        "fwdbwd_flops": None, "fwd_tflops": None, "fwdbwd_tflops": None,
        "speedup_vs_flex_fwd": None, "speedup_vs_flex_fwdbwd": None, "max_abs_err": None,
        "err_ref": None, "reused_from": None, "wall_s": None,
    }


def _max_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max())


def run_system(system: str, cfg: Config, q, k, v, do, args, refs: dict) -> dict:
    row = _empty_row(system, cfg)
    dev = cfg.device
    runner = None
    failed = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner = build_runner(system, cfg, q, k, v, do, args)
            if runner.extra:
                row.update({k_: v_ for k_, v_ in runner.extra.items() if k_ in row})
            row["note"] = runner.note
            g_eff = cfg.num_global if runner.num_global is None else runner.num_global
            row["mask_num_global"] = g_eff
            # forward timing; the first call's output feeds the error column
            t, out = time_fn(runner.fwd, dev, args.warmup, args.repeats, args.budget, keep_first=True)
            row.update(fwd_ms=t.median_ms, fwd_first_ms=t.first_ms, fwd_reps=t.reps)
            try:
                row["max_abs_err"], row["err_ref"] = _error_for(system, cfg, out, runner, refs, g_eff, args)
            except Exception as exc:             # the reference itself did not fit: keep the timings
                if not _is_oom(exc):
                    raise
                row["err_ref"] = "n/a (reference OOM)"
                _free(dev, force=True)
            if system == "flex":
                refs["flex"] = out.detach()
            del out
            if dev.type == "cuda":
                row["peak_fwd_mb"] = cuda_peak_mb(runner.fwd, dev)[0]
            if runner.fwdbwd is None:
                row["note"] = "; ".join(x for x in (row["note"], runner.fwdbwd_skip) if x)
            else:
                try:
                    t = time_fn(runner.fwdbwd, dev, args.warmup, args.repeats, args.budget)
                    row.update(fwdbwd_ms=t.median_ms, fwdbwd_first_ms=t.first_ms, fwdbwd_reps=t.reps,
                               bwd_ms=t.median_ms - row["fwd_ms"])
                    if dev.type == "cuda":
                        row["peak_fwdbwd_mb"], row["peak_fwdbwd_abs_mb"] = cuda_peak_mb(runner.fwdbwd, dev)
                except Exception as exc:  # forward fit, backward did not
                    if not _is_oom(exc):
                        raise
                    row["note"] = "; ".join(x for x in (row["note"], "fwd+bwd OOM") if x)
    except Skip as exc:
        row["status"] = str(exc)
    except Exception as exc:
        row["status"] = "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}: {str(exc)[:200]}"
        failed = True
    finally:
        runner = None
        _free(dev, force=failed)
    return row


def _error_for(system, cfg, out, runner, refs, g_eff, args):
    """Max abs error of ``out`` against the best reference available for what the system computes."""
    if system == "sdpa":
        return None, "n/a: full attention"
    n, B, H = cfg.seqlen, cfg.batch, cfg.heads
    small = B * H * n * n <= args.ref_max_elements
    window = (cfg.left, cfg.right)
    if runner.ref_inputs is not None:                       # Longformer: its own projected inputs
        qr, kr, vr = runner.ref_inputs
        if small:
            ref = naive_sliding_window_attention(qr, kr, vr, window, g_eff)
            return _max_err(out, ref), "naive fp32 (own q,k,v proj.)"
        ref = sliding_window_attention(qr, kr, vr, window=window, num_global=g_eff)
        return _max_err(out, ref), "longread fp32 (own q,k,v proj.)"
    if small:
        key = ("naive", g_eff)
        if key not in refs:
            with torch.no_grad():
                refs[key] = naive_sliding_window_attention(refs["q"], refs["k"], refs["v"], window, g_eff)
        if system == "naive":
            return None, "is the reference"
        return _max_err(out, refs[key]), "naive fp32"
    if g_eff == cfg.num_global and "flex" in refs and system != "flex":
        return _max_err(out, refs["flex"]), "flex"
    if g_eff != cfg.num_global:                              # flash at G>0 rows: compare to longread G=0
        with torch.no_grad():
            ref = sliding_window_attention(refs["q"], refs["k"], refs["v"], window=window, num_global=g_eff)
        return _max_err(out, ref), f"longread G={g_eff}"
    return None, "n/a (no reference at this size)"


def _finish_row(row: dict) -> None:
    """Useful pairs, FLOPs and TFLOP/s (for the mask the system actually computed)."""
    pairs = useful_pairs(row["seqlen"], row["left"], row["right"], row["mask_num_global"])
    fwd, fwdbwd = attention_flops(pairs, row["head_dim"], row["batch"], row["heads"])
    row.update(useful_pairs=pairs, fwd_flops=fwd, fwdbwd_flops=fwdbwd)
    if row["fwd_ms"]:
        row["fwd_tflops"] = fwd / (row["fwd_ms"] * 1e-3) / 1e12
    if row["fwdbwd_ms"]:
        row["fwdbwd_tflops"] = fwdbwd / (row["fwdbwd_ms"] * 1e-3) / 1e12


def _add_speedups(rows: List[dict]) -> None:
    flex = {(r["seqlen"], r["window"], r["num_global"], r["head_dim"]): r
            for r in rows if r["system"] == "flex"}
    for r in rows:
        f = flex.get((r["seqlen"], r["window"], r["num_global"], r["head_dim"]))
        if f is None:
            continue
        for key, col in (("fwd_ms", "speedup_vs_flex_fwd"), ("fwdbwd_ms", "speedup_vs_flex_fwdbwd")):
            if f[key] and r[key]:
                r[col] = f[key] / r[key]


def _configs(args, device) -> List[Tuple[int, int, List[Config]]]:
    groups = []
    for n in args.seqlens:
        for d in args.head_dims:
            cfgs = [Config(n, left, right, g, d, args.batch, args.heads, args.dtype, device)
                    for (left, right) in args.windows for g in args.globals_]
            groups.append((n, d, cfgs))
    return groups


def run_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _run_benchmark(args, argv)
    finally:
        torch.set_num_threads(prev_threads)


def _run_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        try:
            import torch._dynamo as dynamo
            # every configuration is a new mask_mod, hence a FlexAttention recompile
            for name, value in (("recompile_limit", 256), ("cache_size_limit", 256),
                                ("accumulated_recompile_limit", 8192),
                                ("accumulated_cache_size_limit", 8192)):
                if hasattr(dynamo.config, name):
                    setattr(dynamo.config, name, max(getattr(dynamo.config, name), value))
        except Exception:
            pass
    dev_name = device_name(device)
    out_path = args.out or Path("results") / f"kernel_bench_{_slug(dev_name)}.json"
    flash_ok, flash_info = _flash_available()
    systems = list(args.systems)
    notes = [
        "useful FLOPs count only allowed (i, j) pairs (exact closed form); "
        "fwd = 4*pairs*head_dim*batch*heads, "
        f"bwd = {BWD_FACTOR}x fwd (convention), fwd+bwd = {1 + BWD_FACTOR}x fwd",
        "fwd timed under torch.no_grad(); fwd+bwd = forward + torch.autograd.grad w.r.t. the inputs "
        "(median of timed calls after a first call and warmup)",
        "x flex = FlexAttention ms / system ms on the same row (> 1 is faster than Flex)",
        "peak MB: " + ("torch.cuda.max_memory_allocated during one fwd+bwd call minus memory allocated "
                       "before it (inputs excluded; output and grads included)" if device.type == "cuda"
                       else "n/a on CPU (PyTorch has no CPU allocator peak; RSS high-water is not per call)"),
        "sdpa = dense scaled_dot_product_attention, full attention (no mask), measured once per "
        "(seqlen, head_dim) and repeated on each row; its TFLOP/s counts the useful (masked) FLOPs only",
        "longformer = transformers LongformerSelfAttention (attention_window = 2*window, global attention "
        "on the first G tokens); its times INCLUDE the q/k/v projections (global projections tied to "
        "the local ones), backward w.r.t. the hidden states only; error is vs the reference on its own "
        "projected q, k, v",
        "flash-attn has no global tokens: its rows run the G=0 mask (useful FLOPs for G=0), measured "
        "once per (seqlen, window, head_dim)",
        "flex mask ms = create_block_mask time (median after the first call), not included in flex fwd ms",
        "max err: vs the dense fp32 reference (naive.py) while batch*heads*N^2 <= "
        f"{int(args.ref_max_elements)}, else vs the FlexAttention output",
    ]
    if device.type == "cpu":
        notes.append("CPU: FlexAttention runs eagerly (unfused) and has no CPU backward")
    if "flash-attn" in systems and not flash_ok:
        notes.append(f"flash-attn not importable ({flash_info}); its rows are skipped")
        if not args.explicit_systems:
            systems.remove("flash-attn")
    meta = {
        "device": dev_name, "device_type": device.type, "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, "-m", MODULE, *argv]),
        "sys_argv": list(sys.argv), "cwd": os.getcwd(),
        "settings": {
            "seqlens": args.seqlens, "windows": [f"{a}:{b}" for a, b in args.windows],
            "head_dims": args.head_dims, "globals": args.globals_, "dtype": DTYPE_NAMES[args.dtype],
            "batch": args.batch, "heads": args.heads, "systems": systems, "repeats": args.repeats,
            "warmup": args.warmup, "budget_s": args.budget, "quick": args.quick,
            "dense_max_seqlen": args.dense_max_seqlen, "longformer_max_seqlen": args.longformer_max_seqlen,
            "naive_max_seqlen": args.naive_max_seqlen, "ref_max_elements": args.ref_max_elements,
            "flex_compile": args.flex_compile, "seed": args.seed, "threads": args.threads,
            "bwd_flop_factor": BWD_FACTOR,
        },
    }
    meta["out"] = str(out_path)
    result = {"meta": meta, "notes": notes, "rows": []}
    groups = _configs(args, device)
    total = sum(len(c) for _, _, c in groups) * len(systems)
    bar = None
    if not args.no_progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="sliding-window bench", unit="run", file=sys.stderr)
        except ImportError:
            bar = None
    t_start = time.perf_counter()
    try:
        for n, d, cfgs in groups:
            q = k = v = do = None
            try:
                gen = torch.Generator(device=device).manual_seed(args.seed + n * 131 + d)
                shape = (args.batch, args.heads, n, d)
                q, k, v, do = (torch.randn(shape, generator=gen, device=device, dtype=args.dtype)
                               for _ in range(4))
                for t in (q, k, v):
                    t.requires_grad_()
            except Exception as exc:
                status = "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}: {exc}"
                for cfg in cfgs:
                    for s in systems:
                        row = _empty_row(s, cfg)
                        row["status"] = f"{status} (allocating inputs)"
                        result["rows"].append(row)
                        if bar:
                            bar.update(1)
                continue
            reuse: Dict[tuple, dict] = {}
            for cfg in cfgs:
                refs = {"q": q.detach(), "k": k.detach(), "v": v.detach()}
                for s in systems:
                    if bar:
                        bar.set_postfix_str(f"N={n} W={cfg.window_str} G={cfg.num_global} D={d} {s}")
                    # systems whose work does not depend on G (flash) or on window and G (sdpa)
                    key = {"sdpa": ("sdpa",), "flash-attn": ("flash", cfg.left, cfg.right)}.get(s)
                    if key is not None and key in reuse:
                        row = dict(reuse[key])
                        src = reuse[key]
                        row.update(left=cfg.left, right=cfg.right, window=cfg.window_str,
                                   num_global=cfg.num_global,
                                   reused_from=f"W={src['window']} G={src['num_global']}")
                        row["wall_s"] = 0.0
                        if s == "sdpa":
                            row["mask_num_global"] = cfg.num_global
                    else:
                        t_row = time.perf_counter()
                        row = run_system(s, cfg, q, k, v, do, args, refs)
                        row["wall_s"] = time.perf_counter() - t_row
                        if key is not None:
                            reuse[key] = dict(row)
                    _finish_row(row)
                    result["rows"].append(row)
                    if bar:
                        bar.update(1)
                refs.clear()
            del q, k, v, do
            _free(device)
            _add_speedups(result["rows"])
            result["meta"]["elapsed_s"] = time.perf_counter() - t_start
            write_outputs(result, out_path, markdown=not args.no_markdown)   # partial results survive
    finally:
        if bar:
            bar.close()
    _add_speedups(result["rows"])
    result["meta"]["elapsed_s"] = time.perf_counter() - t_start
    write_outputs(result, out_path, markdown=not args.no_markdown)
    return result


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
def _fmt(x, spec: str = ".3g", none: str = "-") -> str:
    if x is None:
        return none
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _fmt_ms(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def markdown_table(result: dict) -> str:
    cpu = result["meta"]["device_type"] != "cuda"
    head = ["system", "N", "W", "G", "D", "fwd ms", "fwd+bwd ms",
            "peak MB (f+b)" if not cpu else "peak MB", "fwd TFLOP/s", "f+b TFLOP/s", "x flex fwd",
            "x flex f+b", "max err", "err vs", "flex mask ms", "status / note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in result["rows"]:
        note = r["status"] if r["status"] != "ok" else r["note"]
        if r["reused_from"] and r["status"] == "ok":
            note = "; ".join(x for x in (note, f"same measurement as {r['reused_from']}") if x)
        peak = "n/a" if cpu else _fmt(r["peak_fwdbwd_mb"], ".1f")
        cells = [r["system"], str(r["seqlen"]), r["window"], str(r["num_global"]), str(r["head_dim"]),
                 _fmt_ms(r["fwd_ms"]), _fmt_ms(r["fwdbwd_ms"]), peak, _fmt(r["fwd_tflops"]),
                 _fmt(r["fwdbwd_tflops"]), _fmt(r["speedup_vs_flex_fwd"], ".2f"),
                 _fmt(r["speedup_vs_flex_fwdbwd"], ".2f"), _fmt(r["max_abs_err"], ".2e"),
                 r["err_ref"] or "-", _fmt_ms(r["mask_build_ms"]), note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    m = result["meta"]
    v = m["versions"]
    s = m["settings"]
    lines = [
        f"# sliding_window_attention microbenchmark: {m['device']}",
        "",
        f"- date: {m['date']}; torch {v['torch']}, triton {v['triton']}, transformers {v['transformers']}, "
        f"flash-attn {v['flash_attn']}",
        f"- command: `{m['command']}`",
        f"- dtype {s['dtype']}, batch {s['batch']}, heads {s['heads']}",
        "",
        markdown_table(result),
        "",
        "Notes:",
        "",
    ]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out_path: Path, markdown: bool = True) -> None:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=True))
    os.replace(tmp, out_path)
    if markdown:
        out_path.with_suffix(".md").write_text(markdown_report(result))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_args(argv)
    result = run_benchmark(args, argv)
    print(markdown_report(result))
    print(f"wrote {result['meta']['out']}" + ("" if args.no_markdown else
          f" and {Path(result['meta']['out']).with_suffix('.md')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
