"""Fit the no-answer threshold and the score calibration of a reader with a no-answer slot, on
held-out questions only (``corpora.py``: the calibration third of SQuAD 2.0 dev's articles, and
the articles carved out of SQuAD v1.1 train, each asked of its own paragraph and of a paragraph of
another article, which does not answer it). Never a dev file's reported part.

    python -m longread.training.fit_no_answer --model runs/campaign [--dry-run]

* ``no_answer_threshold``: the verdict is "not in the document" when log P(no answer) - log
  P(best span) exceeds it; the threshold maximising the mean F1 (SQuAD 2.0's metric: an
  unanswerable question scores 1 when the reader abstains) among those that abstain on at most
  ``--max-false-abstention`` (5%) of the answerable questions is written into the reader's config.
* Calibration: with the fitted threshold, ``Answer.score`` should be the chance that the answer
  is right. The script reports the expected calibration error (ECE, 10 equal-width bins, "right"
  = F1 >= 0.5, an abstention being right on an unanswerable question) before and after fitting
  the temperature of the span softmax (``temperature``), and writes a reliability plot.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import List

import numpy as np
import torch

from ..decoding import best_spans, null_probability
from ..metrics import expected_calibration_error as ece, text_em_f1
from ..reader import CONFIG_NAME, Reader
from .corpora import HELD, read_squad_json, split_by_article, squad2_parts

THRESHOLDS = np.round(np.arange(-12.0, 12.01, 0.25), 2)
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


def heldout_questions(data_dir, n_squad: int, n_squad2: int, seed: int = 0):
    """(question, context, gold answers ([] = unanswerable)) rows: SQuAD 2.0 calibration articles,
    held-out SQuAD train paragraphs, and the same held-out questions asked of a foreign paragraph."""
    data = Path(data_dir)
    rows = []
    v2 = read_squad_json(data / "squad" / "dev-v2.0.json")
    part = squad2_parts(v2)["calibrate"]
    with open(data / "squad" / "dev-v2.0.json", encoding="utf-8") as f:
        golds = {qa["id"]: [a["text"] for a in qa.get("answers", [])] for art in json.load(f)["data"]
                 for p in art["paragraphs"] for qa in p["qas"]}
    rng = random.Random(seed)
    calib = [r for r in v2 if r.article in part]
    calib = rng.sample(calib, min(n_squad2, len(calib)))
    rows += [(r.question, r.context, [] if r.answer_start < 0 else golds.get(r.id, [r.answer_text]), "squad2")
             for r in calib]
    _, held = split_by_article(read_squad_json(data / "squad" / "train-v1.1.json", keep_unanswerable=False),
                               HELD["squad"])
    held = rng.sample(held, min(n_squad, len(held)))
    contexts = sorted({r.context for r in held})
    for r in held:
        rows.append((r.question, r.context, [r.answer_text], "squad"))
        other = rng.choice([c for c in contexts if c != r.context])
        rows.append((r.question, other, [], "squad-foreign"))
    return rows


def collect(reader: Reader, rows) -> List[dict]:
    """Per question: the best span's text and log-probability, log P(no answer) (temperature 1)."""
    out, prepared = [], {}
    for question, context, gold, source in rows:
        if context not in prepared:
            prepared[context] = reader.prepare(context)
        doc = prepared[context]
        start, end, null = reader.question_logits(doc, question)
        if reader.config.retrieval_weight:
            weight = reader.config.retrieval_weight * reader.config.temperature / 2
            bonus = reader.retrieval_prior(doc, question) * weight
            start, end = start + bonus, end + bonus
        out.append({"start": start.float().cpu(), "end": end.float().cpu(), "null": (float(null[0]), float(null[1])),
                    "doc": doc, "gold": gold, "source": source})
    return out


def outcomes(reader: Reader, rows: List[dict], temperature: float):
    """Per question at this temperature: (F1 if it answers, P(best span), P(no answer), F1 if it
    abstains), as arrays; the verdict at any threshold follows from them (:func:`decide`)."""
    answer_f1, p_span, p_null = [], [], []
    for r in rows:
        span = best_spans(r["start"], r["end"], top_k=1, max_answer_tokens=reader.config.max_answer_tokens,
                          temperature=temperature, mbr_temperature=reader.config.mbr_temperature,
                          mbr_candidates=reader.config.mbr_candidates, null_logits=r["null"])[0]
        offs = r["doc"].tokens.offsets
        text = r["doc"].document.text[int(offs[span.start, 0]):int(offs[span.end, 1])]
        answer_f1.append(text_em_f1(text, r["gold"])[1] if r["gold"] else 0.0)
        p_span.append(span.score)
        p_null.append(null_probability(r["start"], r["end"], r["null"], temperature))
    abstain_f1 = [float(not r["gold"]) for r in rows]
    return tuple(np.array(v, dtype=np.float64) for v in (answer_f1, p_span, p_null, abstain_f1))


def abstains(out, threshold: float) -> np.ndarray:
    """Per question of :func:`outcomes` ``out``: log P(no answer) - log P(best span) > threshold."""
    _, p_span, p_null, _ = out
    return np.log(np.maximum(p_null, 1e-300)) - np.log(np.maximum(p_span, 1e-300)) > threshold


def decide(out, threshold: float):
    """(F1 per question, confidence per question, right per question) of :func:`outcomes` ``out``
    at ``threshold``: abstain when log P(no answer) - log P(best span) exceeds it."""
    answer_f1, p_span, p_null, abstain_f1 = out
    abstain = abstains(out, threshold)
    f1 = np.where(abstain, abstain_f1, answer_f1)
    conf = np.where(abstain, p_null, p_span)
    return f1, conf, f1 >= 0.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--squad-questions", type=int, default=400,
                   help="held-out SQuAD train questions (each also asked of a foreign paragraph)")
    p.add_argument("--squad2-questions", type=int, default=1200, help="SQuAD 2.0 calibration-part questions")
    p.add_argument("--max-false-abstention", type=float, default=0.05,
                   help="most of the answerable held-out questions the threshold may abstain on (a wrong "
                        "'not in the document' costs a user more than a weak answer shown with its score)")
    p.add_argument("--plot", default=None, help="reliability plot PNG (default: next to the model's config)")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    reader = Reader.from_pretrained(args.model, no_answer=True)
    reader.progress = False
    rows = heldout_questions(args.data_dir, args.squad_questions, args.squad2_questions)
    with torch.inference_mode():
        collected = collect(reader, rows)
    base_t = reader.config.temperature
    answerable = np.array([bool(r["gold"]) for r in collected])
    grid, per_temperature = {}, {t: outcomes(reader, collected, t) for t in sorted({*TEMPERATURES, base_t})}
    for t in TEMPERATURES:
        for th in THRESHOLDS:
            f1, conf, right = decide(per_temperature[t], float(th))
            wrongly = float(abstains(per_temperature[t], float(th))[answerable].mean())
            grid[(t, float(th))] = (float(f1.mean()), ece(conf, right)[0], wrongly)
    # the threshold maximises F1 among those that abstain on at most --max-false-abstention of the
    # answerable questions; among settings within 0.2 F1 of that best, the best-calibrated wins
    allowed = {k: v for k, v in grid.items() if v[2] <= args.max_false_abstention} or grid
    best_f1 = max(v[0] for v in allowed.values())
    unconstrained = max(grid.items(), key=lambda kv: kv[1][0])
    (t, th), (f1, err, false_abstention) = min(((k, v) for k, v in allowed.items() if v[0] >= best_f1 - 0.002),
                                               key=lambda kv: kv[1][1])
    _, conf, right = decide(per_temperature[t], th)
    err, table = ece(conf, right)
    before_f1, before_conf, before_right = decide(per_temperature[base_t], 0.0)
    report = {"questions": len(rows), "by_source": {s: sum(r[3] == s for r in rows) for s in {r[3] for r in rows}},
              "temperature": t, "no_answer_threshold": th, "heldout_f1": 100 * f1, "ece": err,
              "false_abstention_pct": 100 * false_abstention,
              "max_false_abstention_pct": 100 * args.max_false_abstention,
              "unconstrained": {"temperature": unconstrained[0][0], "no_answer_threshold": unconstrained[0][1],
                                "heldout_f1": 100 * unconstrained[1][0], "ece": unconstrained[1][1],
                                "false_abstention_pct": 100 * unconstrained[1][2]},
              "before": {"temperature": base_t, "threshold": 0.0, "heldout_f1": 100 * float(before_f1.mean()),
                         "ece": ece(before_conf, before_right)[0]},
              "reliability": table}
    print(json.dumps(report, indent=2))
    plot = Path(args.plot) if args.plot else Path(args.model) / "reliability.png"
    _plot(table, err, plot)
    if args.dry_run:
        return
    path = Path(args.model) / CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["reader"].update(no_answer=True, no_answer_threshold=th, temperature=t)
    meta.setdefault("training", {})["no_answer_fit"] = {k: v for k, v in report.items() if k != "reliability"}
    path.write_text(json.dumps(meta, indent=2))
    print(f"wrote no_answer_threshold={th}, temperature={t} into {path}")


def _plot(table, err: float, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    ax.scatter([c for c, _, _ in table], [a for _, a, _ in table], s=[max(8, n / 4) for _, _, n in table])
    ax.plot([c for c, _, _ in table], [a for _, a, _ in table])
    ax.set(xlabel="score (confidence)", ylabel="fraction right (F1 >= 0.5)", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability, ECE {err:.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
