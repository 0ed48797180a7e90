"""Fit the reader's passage-retrieval prior (``retrieval_weight``, ``retrieval_temperature``) on
whole held-out COVID-QA training articles (the articles ``train.py`` holds out with the same
seed; never the dev file), and write the best pair into the reader's config.

    python -m longread.training.fit_prior --model longread/default_model --data-dir ../shared/data

Each question is asked of its whole article; the reader's logits and the passage cosines are
computed once, then a grid of (weight, temperature) is scored by SQuAD F1.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from ..decoding import best_spans
from ..metrics import text_em_f1
from ..reader import CONFIG_NAME, Reader
from ..retrieval import chunk_log_prior, passage_cosines
from .data import load_squad_records
from .train import split_articles

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
TEMPERATURES = (0.01, 0.02, 0.05, 0.1)


def collect(reader: Reader, records):
    """Per question: raw start/end logits, passage cosines, token -> passage, and the gold."""
    rows = []
    for rec in records:
        prepared = reader.prepare(rec.context)
        start, end = reader.logits(prepared, rec.question)
        token_passage, cosine = passage_cosines(reader.retriever, prepared, rec.question)
        rows.append((prepared, start.float().cpu(), end.float().cpu(), token_passage, cosine, rec.answer_text))
    return rows


def score(reader: Reader, rows, weight: float, temperature: float) -> float:
    f1s = []
    t = reader.config.temperature
    for prepared, start, end, token_passage, cosine, gold in rows:
        bonus = chunk_log_prior(cosine, temperature)[token_passage] * (weight * t / 2)
        span = best_spans(start + bonus, end + bonus, top_k=1, max_answer_tokens=reader.config.max_answer_tokens,
                          temperature=t)[0]
        a, b = int(prepared.tokens.offsets[span.start, 0]), int(prepared.tokens.offsets[span.end, 1])
        f1s.append(text_em_f1(prepared.document.text[a:b], [gold])[1])
    return 100 * sum(f1s) / len(f1s)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="longread/default_model")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--holdout-articles", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="must match train.py's --seed (same held-out articles)")
    p.add_argument("--dry-run", action="store_true", help="print the grid, do not write the config")
    args = p.parse_args(argv)

    records = load_squad_records(Path(args.data_dir) / "covidqa" / "train.json")
    _, held = split_articles(records, args.holdout_articles, random.Random(args.seed))
    reader = Reader.from_pretrained(args.model)
    reader.progress = False
    with torch.inference_mode():
        rows = collect(reader, held)
    print(f"{len(rows)} questions from {len({r.article for r in held})} held-out articles")
    grid = {(w, tau): score(reader, rows, w, tau) for w in WEIGHTS for tau in TEMPERATURES if w or tau == TEMPERATURES[0]}
    for (w, tau), f1 in grid.items():
        print(f"weight {w:4.1f}  temperature {tau:5.2f}  F1 {f1:5.1f}")
    (w, tau), f1 = max(grid.items(), key=lambda kv: kv[1])
    print(f"best: weight {w} temperature {tau} F1 {f1:.1f} (no prior: {grid[(0.0, TEMPERATURES[0])]:.1f})")
    if args.dry_run:
        return
    path = Path(args.model) / CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["reader"].update(retrieval_weight=w, retrieval_temperature=tau)
    meta.setdefault("training", {})["retrieval_prior_fit"] = {
        "heldout_questions": len(rows), "f1": f1, "f1_without_prior": grid[(0.0, TEMPERATURES[0])]}
    path.write_text(json.dumps(meta, indent=2))
    print(f"wrote retrieval_weight={w}, retrieval_temperature={tau} into {path}")


if __name__ == "__main__":
    main()
