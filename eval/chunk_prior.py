"""How well the passage prior ranks the chunk that holds the answer, by its ``mean_weight``.

Haystacks of ``--haystack`` chunks built from the held-out SQuAD v1.1 train articles (never a dev
file; ``longread.training.train_selector.ChunkBank``: every chunk of the question's own article as
hard negatives plus random chunks of other articles). Each chunk is scored by
``longread.selection.chunk_scores``: the question's best passage cosine, plus ``mean_weight``
times its cosine to the chunk's mean passage embedding. Reports recall@k (the gold chunk among
the k ranked first) with Wilson 95% intervals, and the paired change against ``mean_weight=0``.

    python eval/chunk_prior.py --out docs/results --name chunk_prior_cpu
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, PROJECT_ROOT, environment, markdown_table, write_outputs  # noqa: E402
from long_context import wilson_interval  # noqa: E402

from longread.reader import Reader  # noqa: E402
from longread.selection import chunk_scores  # noqa: E402

KS = (1, 2, 4, 8)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--model", default=None, help="reader directory (default: the shipped reader)")
    p.add_argument("--weights", default="0,0.25,0.5,1", help="mean_weight values to compare")
    p.add_argument("--haystack", type=int, default=64, help="chunks per haystack")
    p.add_argument("--questions", type=int, default=1000, help="held-out questions (at most)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(PROJECT_ROOT / "results"))
    p.add_argument("--name", default="chunk_prior")
    return p.parse_args(argv)


def ranks(bank, q_emb: torch.Tensor, items, weight: float) -> torch.Tensor:
    """0-based rank of the gold chunk in each haystack under ``chunk_scores(mean_weight=weight)``."""
    passages = torch.arange(len(bank.passage_chunk))             # one "token" per passage
    passage_chunk = bank.passage_chunk.numpy()
    out = []
    for qi, hay in items:
        cosine = bank.passage_emb @ q_emb[qi]
        scores = chunk_scores(passages, cosine, passage_chunk, len(bank.means), passage_emb=bank.passage_emb,
                              mean_weight=weight)[hay]
        gold = scores[hay.index(bank.questions[qi][1])]
        out.append(int((scores > gold).sum()))
    return torch.tensor(out)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from longread.training.corpora import load_corpus
    from longread.training.train_selector import ChunkBank

    reader = Reader.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    reader.progress = False
    corpus = load_corpus(args.data_dir, ["squad"])
    bank = ChunkBank(reader, corpus.held["squad"], "held-out paragraphs")
    rng = random.Random(1)
    order = list(range(len(bank.questions)))
    rng.shuffle(order)
    items = [(qi, bank.haystack(qi, args.haystack, rng)) for qi in order[: args.questions]]
    q_emb = reader.retriever.embed([q for q, _, _ in bank.questions])
    weights = [float(w) for w in args.weights.split(",")]
    by_weight = {w: ranks(bank, q_emb, items, w) for w in weights}
    n = len(items)
    base = by_weight[weights[0]]
    rows, table = [], []
    for w, r in by_weight.items():
        row = {"mean_weight": w, "n": n}
        for k in KS:
            hits = int((r < k).sum())
            row[f"recall@{k}"] = 100.0 * hits / n
            row[f"recall@{k}_ci"] = wilson_interval(hits, n)
        # paired against the first weight: questions whose gold chunk enters / leaves the top 4
        row["top4_gained"] = int(((r < 4) & (base >= 4)).sum())
        row["top4_lost"] = int(((r >= 4) & (base < 4)).sum())
        rows.append(row)
        table.append([w] + [f"{row[f'recall@{k}']:.1f} [{row[f'recall@{k}_ci'][0]:.1f}-{row[f'recall@{k}_ci'][1]:.1f}]"
                            for k in KS] + [row["top4_gained"], row["top4_lost"]])
    env = environment(reader.device, "eval/chunk_prior.py", argv)
    result = {"environment": env, "settings": vars(args) | {"paragraphs": len(set(a for _, _, a in bank.questions)),
                                                            "chunks": len(bank.means)}, "rows": rows}
    md = "\n".join([
        "# Passage prior: ranking the answer's chunk", "",
        f"- device: {env['device_name']} ({env['torch_threads']} torch threads), {env['date']}",
        f"- command: `{env['command']}`",
        f"- held-out SQuAD v1.1 train articles: {len(bank.questions)} questions, {len(bank.means)} chunks; "
        f"{n} questions asked, each of a haystack of {args.haystack} chunks (its own article's chunks first)", "",
        markdown_table(["mean_weight"] + [f"recall@{k} % [95% CI]" for k in KS]
                       + [f"top-4 gained vs {weights[0]}", "top-4 lost"], table), "",
        "Score of a chunk = best passage cosine + mean_weight x cosine to the chunk's mean passage embedding "
        "(longread.selection.chunk_scores). Gained / lost: questions whose gold chunk enters / leaves the "
        "4 ranked first, paired against the first row (the questions are shared, so a paired count is the "
        "fair comparison; the intervals are per row)."])
    write_outputs(Path(args.out) / f"{args.name}.json", result, md)
    print(md)
    return result


if __name__ == "__main__":
    main()
