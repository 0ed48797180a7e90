"""Sequence-parallel reading: measured time with 1/2/4 gloo processes, and communication on paper.

Measured: ``longread.parallel.sequence_parallel_logits`` (question-free layers with halos,
summaries all-gathered, question-aware layers with the global rows merged across ranks, span
head) with a tiny random model on synthetic tokens, one thread per process, every process
count at every length; next to it the single-process ``model.forward``. Wall time is the slowest
rank's (a barrier before and after), the best of ``--repeats``; CPU time (``process_time``) per
rank shows the work each rank does, which is what shrinks with more processes when the cores
are shared with other work.

On paper: for the default reader's configuration (hidden 384, window (128, 128), 3 + 3 layers,
256-token chunks) and a ``--paper-tokens`` document on 8-64 GPUs in bf16, the bytes each rank
boundary exchanges per layer (the halo), the summaries all-gathered once per question and the
global rows' partial attention all-reduced per question-aware layer.

    python eval/scaling.py                                    # 1,2,4 processes; 4k, 16k, 64k tokens
    python eval/scaling.py --procs 1,2 --lengths 2048 --repeats 1     # a quick look

Writes docs/results/scaling_cpu.json and .md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PROJECT_ROOT, environment, markdown_table, report  # noqa: E402

from longread.layout import (LayoutConfig, QuestionInputs, TokenizedDocument, chunk_token_starts,  # noqa: E402
                             document_inputs)
from longread.model import EncoderConfig, LongReaderModel  # noqa: E402
from longread.parallel import sequence_parallel_logits  # noqa: E402

TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
            attention_window=(64, 64), question_free_layers=2)
QUESTION_TOKENS = 16


def synthetic(n: int, layout: LayoutConfig):
    """Random token ids cut into full chunks (no sentence ends), and a 16-token question."""
    rng = np.random.default_rng(n)
    ids = rng.integers(1000, size=n)
    tok = TokenizedDocument(ids, np.zeros((n, 2), np.int64), chunk_token_starts(n, np.zeros(0, np.int64), layout),
                            np.zeros(0, np.int64))
    q = QuestionInputs(torch.as_tensor(rng.integers(1000, size=(1, QUESTION_TOKENS))),
                       torch.arange(QUESTION_TOKENS)[None], torch.zeros(1, QUESTION_TOKENS, dtype=torch.long))
    return tok, document_inputs(tok, layout), q


def _worker(rank: int, world: int, init_file: str, lengths: List[int], repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = LongReaderModel(EncoderConfig(**TINY)).eval()
    layout = LayoutConfig()
    rows = []
    for n in lengths:
        tok, doc, q = synthetic(n, layout)
        best, cpu = math.inf, math.inf
        for _ in range(repeats):
            if world > 1:
                dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                sequence_parallel_logits(model, doc, q, tok.chunk_starts)
            c1 = time.process_time()
            if world > 1:
                dist.barrier()
            best, cpu = min(best, time.perf_counter() - t0), min(cpu, c1 - c0)
        cpus = [cpu] * world
        if world > 1:
            dist.all_gather_object(cpus, cpu)
        single = None
        if world == 1:       # the plain single-process forward, for reference
            single = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                with torch.inference_mode():
                    model(torch.cat([q.input_ids, doc.input_ids], 1), torch.cat([q.position_ids, doc.position_ids], 1),
                          torch.cat([q.token_type_ids, doc.token_type_ids], 1), QUESTION_TOKENS,
                          chunk_ids=doc.chunk_ids, num_chunks=doc.num_chunks)
                single = min(single, time.perf_counter() - t0)
        rows.append({"tokens": n, "processes": world, "seconds": best, "cpu_seconds_per_rank_max": max(cpus),
                     "cpu_seconds_all_ranks": sum(cpus), "single_forward_seconds": single, "chunks": tok.num_chunks})
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    if world > 1:
        dist.destroy_process_group()


def measure(procs: Sequence[int], lengths: List[int], repeats: int) -> List[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in procs:
            out = os.path.join(tmp, f"rows{world}.json")
            mp.spawn(_worker, args=(world, os.path.join(tmp, f"init{world}"), lengths, repeats, out), nprocs=world)
            rows += json.loads(Path(out).read_text())
            print(f"measured {world} process(es)", flush=True)
    return rows


def paper(tokens: int, gpus: Sequence[int], bytes_per: int = 2) -> dict:
    """Communication of the default reader's configuration, per rank, for a ``tokens`` document."""
    cfg = json.loads((PROJECT_ROOT / "longread" / "default_model" / "longread_config.json").read_text())
    enc, lay = cfg["encoder"], cfg["reader"]["layout"]
    hidden, heads = enc["hidden_size"], enc["num_attention_heads"]
    left, right = enc["attention_window"]
    layers, k = enc["num_hidden_layers"], enc["question_free_layers"]
    chunks_min = math.ceil(tokens / lay["chunk_size"])                         # full chunks
    chunks_max = math.ceil(tokens / (lay["chunk_size"] * lay["min_chunk_fraction"]))
    globals_ = chunks_min + lay["max_question_tokens"]
    halo = (left + right) * hidden * bytes_per                                  # per boundary per layer, both ways
    rows = []
    for p in gpus:
        rows.append({
            "gpus": p, "tokens_per_gpu": tokens // p,
            "shard_states_bytes": tokens // p * hidden * bytes_per,
            "halo_bytes_per_boundary_per_layer": halo,
            "halo_bytes_per_document": halo * (p - 1) * layers,
            "summaries_allgather_bytes_received_per_gpu": (p - 1) * chunks_min // p * hidden * bytes_per,
            # partial attention of the global rows: (G, heads, head_dim + 1) fp32, ring all-reduce ~2x
            "global_rows_allreduce_bytes_per_gpu_per_layer": 2 * (p - 1) * globals_ * (hidden + heads) * 4 // p,
        })
    return {"tokens": tokens, "bytes_per_element": bytes_per, "hidden": hidden, "window": [left, right],
            "layers": layers, "question_free_layers": k, "chunks": [chunks_min, chunks_max],
            "global_tokens": globals_, "rows": rows}


def mib(b: float) -> str:
    return f"{b / 2**20:,.2f} MiB" if b >= 2**20 else f"{b / 2**10:,.0f} KiB"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--lengths", default="4096,16384,65536")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paper-tokens", type=int, default=10_000_000)
    ap.add_argument("--paper-gpus", default="8,16,32,64")
    ap.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "results" / "scaling_cpu.json"))
    args = ap.parse_args(argv)
    procs = [int(p) for p in args.procs.split(",")]
    lengths = [int(n) for n in args.lengths.split(",")]
    rows = measure(procs, lengths, args.repeats)
    base = {r["tokens"]: r for r in rows if r["processes"] == 1}
    table = []
    for r in rows:
        one = base.get(r["tokens"])
        r["speedup_vs_1_process"] = one["seconds"] / r["seconds"] if one else None
        table.append([r["tokens"], r["processes"], r["seconds"], r["speedup_vs_1_process"],
                      r["cpu_seconds_per_rank_max"], r["cpu_seconds_all_ranks"],
                      one["single_forward_seconds"] if one else None])
    plan = paper(args.paper_tokens, [int(g) for g in args.paper_gpus.split(",")])
    env = environment(torch.device("cpu"), "eval/scaling.py", argv)
    md = [f"# Sequence-parallel reading: scaling\n\nMeasured on {env['cpu_model']} ({env['cpu_count']} cores, "
          f"shared; load average at start {env.get('load_average_at_start')}), gloo, 1 thread per process, "
          f"tiny random model {TINY}:\n",
          markdown_table(["tokens", "processes", "wall seconds", "speed-up vs 1 process", "CPU s, busiest rank",
                          "CPU s, all ranks", "single-process forward (s)"],
                         sorted(table)),
          f"\nOn paper: default reader config (hidden {plan['hidden']}, window {tuple(plan['window'])}, "
          f"{plan['question_free_layers']} + {plan['layers'] - plan['question_free_layers']} layers), "
          f"{plan['tokens']:,} tokens, bf16; {plan['chunks'][0]:,}-{plan['chunks'][1]:,} chunks, "
          f"{plan['global_tokens']:,} global tokens (at full chunks):\n",
          markdown_table(["GPUs", "tokens per GPU", "shard states", "halo per boundary per layer",
                          "summaries all-gather per GPU (once)", "global-row all-reduce per GPU per layer"],
                         [[r["gpus"], r["tokens_per_gpu"], mib(r["shard_states_bytes"]),
                           mib(r["halo_bytes_per_boundary_per_layer"]),
                           mib(r["summaries_allgather_bytes_received_per_gpu"]),
                           mib(r["global_rows_allreduce_bytes_per_gpu_per_layer"])] for r in plan["rows"]])]
    report(args.out, {"environment": env, "model": TINY, "measured": rows, "paper": plan}, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
