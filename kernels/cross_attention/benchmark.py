"""Speed and memory of the cross-attention op's backends on the fusion layer's shapes.

Document tokens attend the patches of images in their chunk and the next ones (sorted by chunk,
so each row's keys are one contiguous range); the first ``G`` rows are global (all patches).
Compares the torch path, the Triton kernels (CUDA only) and dense masked SDPA; prints a table
and writes JSON::

    python -m longread.kernels.cross_attention.benchmark --quick
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .attention import cross_attention
from .naive import cross_attention_mask, naive_cross_attention


def fusion_ranges(n: int, num_images: int, patches: int, chunk: int = 256, num_global: int = 32):
    """Key ranges of the fusion layer: images spread evenly over the chunks."""
    chunks = max(1, n // chunk)
    image_chunk = torch.linspace(0, chunks - 1, num_images).round().long()
    token_chunk = torch.arange(n) // chunk
    first = torch.searchsorted(image_chunk, token_chunk - 1)
    last = torch.searchsorted(image_chunk, token_chunk + 1, right=True)
    start, end = first * patches, last * patches
    start[:num_global], end[:num_global] = 0, num_images * patches
    return start[None], end[None]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def timed(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main(argv=None):
    p = argparse.ArgumentParser(description="cross-attention backends on fusion-layer shapes")
    p.add_argument("--lengths", default="4096,16384")
    p.add_argument("--images", default="1,10,100")
    p.add_argument("--patches", type=int, default=16)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="4096 tokens; 1 and 100 images")
    p.add_argument("--out", default="results/cross_attention_bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.images = "4096", "1,100"
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for n in map(int, args.lengths.split(",")):
        for num_images in map(int, args.images.split(",")):
            nk = num_images * args.patches
            g = torch.Generator().manual_seed(0)
            q = torch.randn(1, args.heads, n, args.head_dim, generator=g).to(dev)
            k, v = (torch.randn(1, args.heads, nk, args.head_dim, generator=g).to(dev) for _ in range(2))
            start, end = (t.to(dev) for t in fusion_ranges(n, num_images, args.patches))
            allowed = cross_attention_mask(start, end, nk)
            ref = naive_cross_attention(q, k, v, start, end, args.head_dim ** -0.5).float()
            row = {"tokens": n, "images": num_images, "keys": nk,
                   "allowed_fraction": float(allowed.float().mean())}
            backends = {"torch": lambda: cross_attention(q, k, v, key_start=start, key_end=end, backend="torch")}
            if dev.type == "cuda":
                backends["triton"] = lambda: cross_attention(q, k, v, key_start=start, key_end=end, backend="triton")
            nonempty = allowed.any(-1, keepdim=True)
            backends["dense SDPA"] = lambda: F.scaled_dot_product_attention(  # noqa: E731
                q, k, v, attn_mask=allowed | ~nonempty) * nonempty
            with torch.no_grad():
                for name, fn in backends.items():
                    row[f"{name} ms"] = round(1000 * timed(fn, args.repeats), 2)
                    row[f"{name} max err"] = float((fn().float() - ref).abs().max())
            rows.append(row)
            print(row, flush=True)
    env = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else _cpu_name(),
           "torch": torch.__version__, "threads": args.threads, "heads": args.heads, "head_dim": args.head_dim,
           "patches_per_image": args.patches, "dtype": "float32"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
