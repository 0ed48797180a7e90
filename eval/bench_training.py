"""Training throughput side by side: one sequence per question (a fixed number per batch) against
documents grouped with their questions under a token budget, on the same SQuAD paragraphs, in
fp32 and (``--bf16``) bf16 autocast.

    python eval/bench_training.py --steps 4 --threads 2

Every variant trains the same model (all layers but the embeddings, AdamW) for ``--steps`` steps
after one warm-up step and reports questions/s and tokens/s (question + document tokens each
question is read with). Writes results/bench_training.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, report  # noqa: E402

from longread.layout import LayoutConfig  # noqa: E402
from longread.devices import default_dtype  # noqa: E402
from longread.training.campaign import build_model  # noqa: E402
from longread.training.corpora import read_squad_json  # noqa: E402
from longread.training.grouped import Group, GroupBuilder, batches, collate, grouped_forward, grouped_loss  # noqa


def per_question(groups):
    """The same questions, one group (one document copy) each."""
    return [Group(g.d_ids, g.d_pos, g.d_type, g.d_chunk, g.num_chunks, [q], g.offsets, g.context)
            for g in groups for q in g.questions]


def run(model, order, groups, steps, autocast):
    model = copy.deepcopy(model).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    n_q = n_tok = 0
    t0 = None
    for i, idx in enumerate(order[:steps + 1]):
        if i == 1:
            t0 = time.perf_counter()
        batch = collate([groups[j] for j in idx])
        with autocast():
            loss = grouped_loss(grouped_forward(model, batch, torch.device("cpu")), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 1:
            n_q += len(batch["questions"])
            n_tok += int(batch["q_mask"].sum()) + int(batch["d_mask"][batch["doc_index"]].sum())
    dt = time.perf_counter() - t0
    return {"questions_per_s": n_q / dt, "tokens_per_s": n_tok / dt, "steps": steps, "seconds": dt}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--questions-per-batch", type=int, default=16)
    p.add_argument("--token-budget", type=int, default=6144)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/bench_training.json")
    p.add_argument("--bf16", action="store_true", default=default_dtype(torch.device("cpu")) == torch.bfloat16,
                   help="also bf16 autocast (default: only where the CPU has native bf16 matrix units; elsewhere "
                        "it is emulated and several times slower)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    ns = argparse.Namespace(window=128, question_free_layers=3, init_from=None)
    model, base_dir = build_model(ns)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    builder = GroupBuilder(tokenizer, LayoutConfig())
    records = read_squad_json(Path(args.data_dir) / "squad" / "train-v1.1.json", keep_unanswerable=False)
    rng = random.Random(0)
    paragraphs = sorted({r.context for r in records})
    rng.shuffle(paragraphs)
    keep = set(paragraphs[:600])
    groups = builder.groups([r for r in records if r.context in keep], (384,), rng, True)
    singles = per_question(groups)
    fixed = [list(range(i, i + args.questions_per_batch)) for i in range(0, len(singles), args.questions_per_batch)
             if i + args.questions_per_batch <= len(singles)]
    random.Random(1).shuffle(fixed)
    budget = batches(groups, args.token_budget, random.Random(2))
    fp32 = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    per_q = f"one sequence per question, {args.questions_per_batch} per batch"
    grouped = f"documents grouped with their questions, {args.token_budget}-token budget"
    rows = {f"{per_q}, fp32": run(model, fixed, singles, args.steps, fp32),
            f"{grouped}, fp32": run(model, budget, groups, args.steps, fp32)}
    if args.bf16:
        rows[f"{per_q}, bf16 autocast"] = run(model, fixed, singles, args.steps, bf16)
        rows[f"{grouped}, bf16 autocast"] = run(model, budget, groups, args.steps, bf16)
    base = next(iter(rows.values()))["questions_per_s"]
    table = markdown_table(["variant", "questions/s", "tokens/s", "vs first"],
                           [[name, round(r["questions_per_s"], 2), round(r["tokens_per_s"]),
                             f"{r['questions_per_s'] / base:.2f}x"] for name, r in rows.items()])
    env = environment(torch.device("cpu"), "eval/bench_training.py", argv)
    env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    report(args.out, {"environment": env, "rows": rows},
           f"# Training throughput ({env['cpu_model']}, {env['cpu_capability']}, {args.threads} threads, "
           f"{env['date'][:10]})\n\n{table}")


if __name__ == "__main__":
    main()
