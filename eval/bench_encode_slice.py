"""Speed of the question-free encoding of a whole document by the size of the slices it is cut into.

``LongReaderModel.encode_document`` encodes a long document ``slice_tokens`` tokens at a time, each
slice with a halo of ``question_free_layers x window`` tokens on both sides, so every slice size
gives the same states (checked here) and only the speed differs: small slices recompute more
halo, large slices have working sets far beyond the CPU caches. The reader picks its slice from
this table (``longread.reader.ENCODE_SLICE``).

Documents: the same real text as ``eval/bench_reader.py`` (COVID-QA dev articles, then Wikipedia
lead sections) cut to each length. Every slice size is timed ``--repeats`` times, the sizes
interleaved (round-robin), so a change of machine load hits them alike; the table gives the
median and the range.

    python eval/bench_encode_slice.py --lengths 16384,100000,262144 --slices 4096,8192,16384,65536
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DATA_DIR, PROJECT_ROOT, environment, markdown_table, reader_description,  # noqa: E402
                     reader_from_args, report)
from bench_reader import build_corpus, cut  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="reader directory (default: the shipped reader)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--lengths", default="16384,100000,262144", help="document lengths in tokens")
    p.add_argument("--slices", default="4096,8192,16384,65536", help="slice sizes in tokens")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--covidqa", default=str(DATA_DIR / "covidqa" / "dev.json"))
    p.add_argument("--wiki", default=str(DATA_DIR / "wiki" / "summaries_en.json"))
    p.add_argument("--out", default=str(PROJECT_ROOT / "results" / "encode_slice.json"))
    args = p.parse_args(argv)
    args.lengths_list = [int(x) for x in args.lengths.split(",") if x.strip()]
    args.slices_list = [int(x) for x in args.slices.split(",") if x.strip()]
    if not args.lengths_list or not args.slices_list or min(args.lengths_list + args.slices_list) < 1:
        p.error("--lengths and --slices need positive integers, e.g. --lengths 16384 --slices 8192,65536")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


@torch.inference_mode()
def time_slices(model, input_ids, position_ids, token_type_ids, slices: Sequence[int], repeats: int):
    """{slice: [seconds per repeat]} and the largest difference of the states from the first slice's."""
    times, reference, max_diff = {s: [] for s in slices}, None, 0.0
    for _ in range(repeats):
        for s in slices:
            t0 = time.perf_counter()
            states = model.encode_document(input_ids, position_ids, token_type_ids, slice_tokens=s)
            times[s].append(time.perf_counter() - t0)
            if reference is None:
                reference = states
            else:
                max_diff = max(max_diff, float((states.float() - reference.float()).abs().max()))
    return times, max_diff


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    reader = reader_from_args(args)
    env = environment(reader.device, "eval/bench_encode_slice.py", argv)
    text, offsets, _ = build_corpus(args.covidqa, args.wiki, reader.tokenizer, max(args.lengths_list))
    rows, table = [], []
    for n in args.lengths_list:
        prepared = reader.prepare(cut(text, offsets, n))
        d = prepared.inputs
        ids, pos, types = (t.to(reader.device) for t in (d.input_ids, d.position_ids, d.token_type_ids))
        times, max_diff = time_slices(reader.model, ids, pos, types, args.slices_list, args.repeats)
        tokens = int(ids.shape[1])
        for s in args.slices_list:
            med = statistics.median(times[s])
            rows.append({"length": n, "tokens": tokens, "slice": s, "seconds": times[s], "median_s": med,
                         "tokens_per_s": tokens / med, "max_abs_diff_vs_first_slice": max_diff})
            table.append([f"{n:,}", f"{s:,}", f"{med:.2f}", f"{min(times[s]):.2f}-{max(times[s]):.2f}",
                          f"{tokens / med:,.0f}"])
        print(f"{n} tokens done (states equal across slices up to {max_diff:.1e})", flush=True)
    result = {"environment": env, "model": reader_description(reader, args.model),
              "settings": {"lengths": args.lengths_list, "slices": args.slices_list, "repeats": args.repeats},
              "results": rows}
    md = "\n".join([
        "# Question-free encoding by slice size", "",
        f"- device: {env['cpu_model'] if reader.device.type == 'cpu' else env['device_name']} "
        f"({reader.device}, {env['torch_threads']} torch threads, load average at start "
        f"{env.get('load_average_at_start')}), torch {env['torch_version']}, {env['date']}",
        f"- command: `{env['command']}`",
        f"- model: {result['model']['model']} ({result['model']['dtype']})",
        f"- {args.repeats} timings per cell, slice sizes interleaved; the states of every slice size equal the "
        f"first's up to {max(r['max_abs_diff_vs_first_slice'] for r in rows):.1e}", "",
        markdown_table(["document tokens", "slice tokens", "median s", "range s", "tokens/s"], table), ""])
    report(args.out, result, md)
    return result


if __name__ == "__main__":
    main()
