"""The kernel microbenchmark runs end to end on CPU and its FLOP accounting is exact."""
import json
import math
import os

import pytest

from longread.kernels.sliding_window.benchmark import (
    attention_flops, main, parse_size, parse_window, useful_pairs, useful_pairs_linear)
from longread.kernels.sliding_window.naive import attention_mask

ROW_KEYS = {
    "system", "seqlen", "window", "left", "right", "num_global", "head_dim", "batch", "heads", "dtype",
    "status", "note", "fwd_ms", "fwdbwd_ms", "bwd_ms", "peak_fwdbwd_mb", "peak_mem_source",
    "useful_pairs", "fwd_flops", "fwdbwd_flops", "fwd_tflops", "fwdbwd_tflops",
    "speedup_vs_flex_fwd", "speedup_vs_flex_fwdbwd", "max_abs_err", "err_ref", "mask_build_ms",
}


@pytest.mark.parametrize("seqlen,left,right,g", [
    (1, 0, 0, 0), (1, 3, 3, 1), (7, 0, 0, 0), (7, 0, 0, 2), (16, 3, 3, 0), (16, 3, 3, 4),
    (16, 5, 1, 0), (16, 0, 6, 3), (33, 2, 9, 5), (33, 9, 2, 1), (20, 20, 20, 0), (20, 100, 3, 2),
    (20, 3, 100, 0), (20, 4, 4, 20), (20, 4, 4, 50), (64, 16, 16, 8), (50, 49, 0, 0), (50, 0, 49, 7),
])
def test_useful_pairs_exact(seqlen, left, right, g):
    dense = int(attention_mask(seqlen, left, right, g).sum())
    assert useful_pairs(seqlen, left, right, g) == dense
    assert useful_pairs_linear(seqlen, left, right, g) == dense


def test_useful_pairs_large_is_fast_and_consistent():
    n = 1 << 20
    assert useful_pairs(n, 1024, 1024, 1024) == useful_pairs_linear(n, 1024, 1024, 1024)
    assert useful_pairs(n, n, n, 0) == n * n
    fwd, fwdbwd = attention_flops(10, 64, 2, 3)
    assert fwd == 4 * 10 * 64 * 2 * 3 and fwdbwd == pytest.approx(3.5 * fwd)


def test_cli_parsers():
    assert parse_size("16k") == 16384 and parse_size("1M") == 1 << 20 and parse_size("300") == 300
    assert parse_window("256") == (256, 256) and parse_window("128:32") == (128, 32)


def _finite_pos(x):
    return x is not None and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_cpu_sweep(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    meta = data["meta"]
    for key in ("device", "versions", "date", "command", "settings"):
        assert meta[key]
    assert "--quick" in meta["command"] and meta["versions"]["torch"]
    rows = data["rows"]
    s = meta["settings"]
    n_cfg = len(s["seqlens"]) * len(s["windows"]) * len(s["head_dims"]) * len(s["globals"])
    assert n_cfg == 24 and len(rows) == n_cfg * len(s["systems"])
    assert {"longread-torch", "flex", "sdpa", "naive"} <= {r["system"] for r in rows}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["useful_pairs"] == useful_pairs(r["seqlen"], r["left"], r["right"], r["num_global"])
        assert r["fwd_flops"] == 4 * r["useful_pairs"] * r["head_dim"] * r["batch"] * r["heads"]
        if r["status"] != "ok":
            assert r["status"].startswith("skipped"), r
            continue
        assert _finite_pos(r["fwd_ms"]) and _finite_pos(r["fwd_tflops"]), r
        if r["system"] != "flex":                       # flex has no CPU backward
            assert _finite_pos(r["fwdbwd_ms"]) and _finite_pos(r["fwdbwd_tflops"]), r
        if r["max_abs_err"] is not None:
            assert r["max_abs_err"] < 1e-4, r
    torch_rows = [r for r in rows if r["system"] == "longread-torch"]
    assert len(torch_rows) == n_cfg and all(r["status"] == "ok" for r in torch_rows)
    assert all(r["max_abs_err"] is not None for r in torch_rows)
    assert all(r["speedup_vs_flex_fwd"] and r["speedup_vs_flex_fwd"] > 0 for r in torch_rows)
    assert all(r["speedup_vs_flex_fwd"] == 1.0 for r in rows if r["system"] == "flex")
    assert all(r["mask_build_ms"] and r["mask_build_ms"] > 0 for r in rows if r["system"] == "flex")


def test_longformer_and_skips_cpu(tmp_path):
    out = tmp_path / "lf.json"
    argv = ["--device", "cpu", "--no-progress", "--no-markdown", "--out", str(out),
            "--systems", "torch,flex,longformer,triton", "--seqlens", "256", "--windows", "32", "16:8",
            "--head-dims", "32", "--globals", "0,8", "--repeats", "1"]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * 4
    lf = [r for r in rows if r["system"] == "longformer"]
    sym = [r for r in lf if r["left"] == r["right"]]
    assert sym and all(r["status"] == "ok" for r in sym)
    assert all(r["max_abs_err"] < 1e-4 and _finite_pos(r["fwdbwd_ms"]) for r in sym)
    assert all(r["status"].startswith("skipped") for r in lf if r["left"] != r["right"])
    triton_rows = [r for r in rows if r["system"] == "longread-triton"]
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):    # the CPU interpreter runs them
        assert all(r["status"] == "ok" and r["max_abs_err"] < 1e-4 for r in triton_rows)
    else:
        assert all(r["status"].startswith("skipped") for r in triton_rows)
    assert all(r["status"] == "ok" and r["max_abs_err"] < 1e-4
               for r in rows if r["system"] in ("longread-torch", "flex"))
