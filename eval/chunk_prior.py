"""How well the passage prior ranks the chunk that holds the answer: by its ``mean_weight``, by
what embeds the passages (``--encoders``: the sentence retriever, or the reader's passage head
over its question-free states), and by the weight of BM25 added to it (``--lexical-weights``).

Haystacks of ``--haystack`` chunks built from the held-out SQuAD v1.1 train articles (never a dev
file; ``longread.training.train_selector.ChunkBank``: every chunk of the question's own article as
hard negatives plus random chunks of other articles). Each chunk is scored by
``longread.selection.chunk_scores``: the question's best passage cosine, plus ``mean_weight``
times its cosine to the chunk's mean passage embedding. Reports recall@k (the gold chunk among
the k ranked first) with Wilson 95% intervals, and the paired change against the first row.
BM25 (``longread.lexical.ChunkBM25``) is computed over each haystack's chunks, as over a document's,
scaled by the haystack's best, exactly as ``Reader.chunk_ranking_scores`` does.

    python eval/chunk_prior.py --out docs/results --name chunk_prior_cpu
    python eval/chunk_prior.py --encoders retriever,head --weights 0.5 --lexical-weights 0,0.2,0.4
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
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
    p.add_argument("--encoders", default="retriever", help="passage encoders: retriever, head (the reader's)")
    p.add_argument("--lexical-weights", default="0", help="BM25 weights to compare")
    p.add_argument("--haystack", type=int, default=64, help="chunks per haystack")
    p.add_argument("--questions", type=int, default=1000, help="held-out questions (at most)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(PROJECT_ROOT / "results"))
    p.add_argument("--name", default="chunk_prior")
    return p.parse_args(argv)


def ranks(bank, q_emb: torch.Tensor, items, weight: float, passage_emb: torch.Tensor, lexical: float = 0.0,
          q_ids=None) -> torch.Tensor:
    """0-based rank of the gold chunk in each haystack under ``chunk_scores(mean_weight=weight)``
    over ``passage_emb``, plus ``lexical`` x the haystack's BM25 scores over their best."""
    from longread.lexical import ChunkBM25

    passages = torch.arange(len(bank.passage_chunk))             # one "token" per passage
    passage_chunk = bank.passage_chunk.numpy()
    out = []
    for qi, hay in items:
        cosine = passage_emb @ q_emb[qi]
        scores = chunk_scores(passages, cosine, passage_chunk, len(bank.means), passage_emb=passage_emb,
                              mean_weight=weight)[hay]
        if lexical:
            ids = np.concatenate([bank.chunk_tokens[c] for c in hay])
            owner = np.concatenate([np.full(len(bank.chunk_tokens[c]), i) for i, c in enumerate(hay)])
            bm25 = ChunkBM25(ids, owner, len(hay)).scores(q_ids[qi])
            scores = scores + lexical * bm25 / bm25.max().clamp(min=1e-6)
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
    lexical = [float(w) for w in args.lexical_weights.split(",")]
    encoders = [e for e in args.encoders.split(",") if e]
    embs = {"retriever": bank.passage_emb, "head": bank.head_emb}
    for e in encoders:
        if e not in embs or embs[e] is None:
            raise SystemExit(f"--encoders: {e!r} is not available (retriever; head for a reader with a passage head)")
    q_ids = [reader.tokenizer(q, add_special_tokens=False)["input_ids"] for q, _, _ in bank.questions]
    settings = [(e, w, lw) for e in encoders for w in weights for lw in lexical]
    by_setting = {st: ranks(bank, q_emb, items, st[1], embs[st[0]], st[2], q_ids) for st in settings}
    n = len(items)
    base = by_setting[settings[0]]
    rows, table = [], []
    for (enc, w, lw), r in by_setting.items():
        row = {"encoder": enc, "mean_weight": w, "lexical_weight": lw, "n": n}
        for k in KS:
            hits = int((r < k).sum())
            row[f"recall@{k}"] = 100.0 * hits / n
            row[f"recall@{k}_ci"] = wilson_interval(hits, n)
        # paired against the first row: questions whose gold chunk enters / leaves the top 4
        row["top4_gained"] = int(((r < 4) & (base >= 4)).sum())
        row["top4_lost"] = int(((r >= 4) & (base < 4)).sum())
        rows.append(row)
        table.append([enc, w, lw] + [f"{row[f'recall@{k}']:.1f} [{row[f'recall@{k}_ci'][0]:.1f}-"
                                     f"{row[f'recall@{k}_ci'][1]:.1f}]" for k in KS]
                     + [row["top4_gained"], row["top4_lost"]])
    first = "/".join(str(x) for x in settings[0])
    env = environment(reader.device, "eval/chunk_prior.py", argv)
    result = {"environment": env, "settings": vars(args) | {"paragraphs": len(set(a for _, _, a in bank.questions)),
                                                            "chunks": len(bank.means)}, "rows": rows}
    md = "\n".join([
        "# Passage prior: ranking the answer's chunk", "",
        f"- device: {env['device_name']} ({env['torch_threads']} torch threads), {env['date']}",
        f"- command: `{env['command']}`",
        f"- held-out SQuAD v1.1 train articles: {len(bank.questions)} questions, {len(bank.means)} chunks; "
        f"{n} questions asked, each of a haystack of {args.haystack} chunks (its own article's chunks first)", "",
        markdown_table(["passages embedded by", "mean_weight", "lexical_weight"]
                       + [f"recall@{k} % [95% CI]" for k in KS]
                       + [f"top-4 gained vs {first}", "top-4 lost"], table), "",
        "Score of a chunk = best passage cosine + mean_weight x cosine to the chunk's mean passage embedding "
        "(longread.selection.chunk_scores) + lexical_weight x BM25 / the haystack's best BM25 (longread.lexical). "
        "Passages embedded by the retriever (all-MiniLM-L6-v2, each passage on its own) or by the reader's "
        "passage head (longread.passage_head, from its question-free states; the question is embedded by the "
        "retriever either way). Gained / lost: questions whose gold chunk enters / leaves the "
        "4 ranked first, paired against the first row (the questions are shared, so a paired count is the "
        "fair comparison; the intervals are per row)."])
    write_outputs(Path(args.out) / f"{args.name}.json", result, md)
    print(md)
    return result


if __name__ == "__main__":
    main()
