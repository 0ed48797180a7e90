"""Paired comparison of two ``evaluate_qa.py`` reports on the same questions: per set, the mean F1
difference (B - A) over the questions both answered, with a 95% paired-bootstrap interval, and
the no-answer ROC AUC of each.

    python eval/compare_qa.py docs/results/eval_qa_campaign_6522.json runs/candidate/eval_qa.json

Both reports must hold their per-question records (``evaluate_qa.py`` without ``--no-predictions``);
questions are matched by set, document and id.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_qa import no_answer_auc  # noqa: E402


def paired(a: dict, b: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """{set: {n, f1_a, f1_b, delta, delta_95ci, auc_a, auc_b}} over the sets both reports hold."""
    out = {}
    for name in sorted(set(a["predictions"]) & set(b["predictions"])):
        ra = {(r["document"], r["id"]): r for r in a["predictions"][name]}
        rb = {(r["document"], r["id"]): r for r in b["predictions"][name]}
        keys = sorted(set(ra) & set(rb))
        if not keys:
            continue
        fa = np.array([ra[k]["f1"] for k in keys])
        fb = np.array([rb[k]["f1"] for k in keys])
        d = fb - fa
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
        row = {"n": len(keys), "f1_a": 100 * fa.mean(), "f1_b": 100 * fb.mean(), "delta": 100 * d.mean(),
               "delta_95ci": [100 * float(np.percentile(means, 2.5)), 100 * float(np.percentile(means, 97.5))]}
        both = [ra[k] for k in keys], [rb[k] for k in keys]
        if any(r["answers"] for r in both[0]) and not all(r["answers"] for r in both[0]):
            for tag, recs in zip(("auc_a", "auc_b"), both):
                if all(r.get("no_answer_score") is not None for r in recs):
                    row[tag] = no_answer_auc(recs)
        out[name] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="the reference report (evaluate_qa JSON)")
    p.add_argument("b", help="the report compared with it")
    args = p.parse_args(argv)
    a, b = (json.loads(Path(x).read_text()) for x in (args.a, args.b))
    rows = paired(a, b)
    print(f"A = {args.a}\nB = {args.b}\n")
    print("| set | n | F1 A | F1 B | B - A [95% CI] | no-answer AUC A | no-answer AUC B |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        auc = [f"{r[k]:.3f}" if k in r else "-" for k in ("auc_a", "auc_b")]
        print(f"| {name} | {r['n']} | {r['f1_a']:.1f} | {r['f1_b']:.1f} | {r['delta']:+.1f} "
              f"[{r['delta_95ci'][0]:+.1f}, {r['delta_95ci'][1]:+.1f}] | {auc[0]} | {auc[1]} |")


if __name__ == "__main__":
    main()
