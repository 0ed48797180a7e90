"""Fit the reader's decoding settings (the passage-retrieval prior's ``retrieval_weight`` and
``retrieval_temperature``, and the span choice's ``mbr_temperature``) on held-out training data
(never a dev file's reported part), and write the best setting into the reader's config.

    python -m longread.training.fit_prior --model longread/default_model --data-dir ../shared/data

Held-out questions: COVID-QA questions asked of their whole article, and XQuAD-en questions asked
of their paragraph, from the articles the reader's own training held out (``--split``): for a
reader from ``train.py`` the articles it holds out with the same seed; for one from
``campaign.py`` the COVID-QA train articles ``corpora.HELD`` carves out and the XQuAD articles of
SQuAD 2.0 dev's calibration part (the campaign trains on none of XQuAD; evaluation reports the
other parts, ``eval/evaluate_qa.py --xquad-questions unseen``).

What the reader reads for each question (with its config: coarse to fine on a document of more
than ``read_full_chunks`` chunks, as ``Reader.answer`` reads it) and the passage cosines are
computed once, then every grid point decodes those reads as ``Reader.decode`` does and is scored
by SQuAD F1; the objective is the mean of the two sets' F1 (``--objective covidqa`` uses
COVID-QA alone), so a setting that helps long scientific answers at the expense of short factoid
ones is not chosen.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

import torch

from ..metrics import text_em_f1
from ..reader import CONFIG_NAME, Reader
from ..retrieval import passage_cosines
from .data import load_squad_records
from .corpora import HELD, read_squad_json, split_by_article, squad2_parts
from .train import HOLDOUT_ARTICLES, XQUAD_HOLDOUT_ARTICLES, split_articles

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
TEMPERATURES = (0.01, 0.02, 0.05, 0.1)
MBR_TEMPERATURES = (0.0, 0.25, 0.5, 1.0)


def collect(reader: Reader, records):
    """Per question: (its prepared document, what ``Reader.answer`` reads for it with the reader's
    config, coarse to fine on a long document (``Reader.read_rounds``), its passage cosines, the
    gold answer)."""
    rows, documents = [], {}
    for rec in records:
        if rec.context not in documents:       # one prepared document per article: its encoding and
            documents[rec.context] = reader.prepare(rec.context)      # passage embeddings are cached
        prepared = documents[rec.context]
        reads, passages, *_ = reader.read_rounds(prepared, rec.question, reader.config.read, 1,
                                                 reader.config.max_answer_tokens)
        if passages is None:
            passages = passage_cosines(reader.passage_encoder, prepared, rec.question)
        rows.append((prepared, reads, passages, rec.answer_text))
    return rows


def heldout_sets(data: Path, split: str, holdout_articles: int = HOLDOUT_ARTICLES, seed: int = 0):
    """(COVID-QA held-out records, XQuAD held-out records) of ``split`` ("train" or "campaign")."""
    xquad = load_squad_records(data / "xquad" / "xquad.en.json")
    if split == "campaign":
        _, covid = split_by_article(read_squad_json(data / "covidqa" / "train.json", keep_unanswerable=False),
                                    HELD["covidqa"])
        calibrate = squad2_parts(read_squad_json(data / "squad" / "dev-v2.0.json"))["calibrate"]
        return covid, [r for r in xquad if r.article in calibrate]
    rng = random.Random(seed)              # the same draws, in the same order, as train.py
    _, covid = split_articles(load_squad_records(data / "covidqa" / "train.json"), holdout_articles, rng)
    _, held = split_articles(xquad, XQUAD_HOLDOUT_ARTICLES, rng)
    return covid, held


def training_split(model_dir) -> str:
    """The held-out split of the recipe that trained the reader in ``model_dir``."""
    path = Path(model_dir) / CONFIG_NAME
    recipe = json.loads(path.read_text()).get("training", {}).get("recipe", "") if path.is_file() else ""
    return "campaign" if recipe.endswith("campaign") else "train"


def score(reader: Reader, rows, weight: float, temperature: float, mbr_temperature: float = 0.0) -> float:
    """Mean F1 (in %) of the best span of :func:`collect`'s ``rows`` decoded as ``Reader.decode``
    does with these settings (the no-answer verdict left out: this fit is about the span)."""
    f1s, config = [], reader.config
    reader.config = dataclasses.replace(config, retrieval_weight=weight, retrieval_temperature=temperature,
                                        mbr_temperature=mbr_temperature, no_answer=False)
    try:
        for prepared, reads, passages, gold in rows:
            span = reader.decode(prepared, reads, passages, 1, config.max_answer_tokens)[0][0]
            a, b = int(prepared.tokens.offsets[span.start, 0]), int(prepared.tokens.offsets[span.end, 1])
            f1s.append(text_em_f1(prepared.document.text[a:b], [gold])[1])
    finally:
        reader.config = config
    return 100 * sum(f1s) / len(f1s)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="longread/default_model")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--holdout-articles", type=int, default=HOLDOUT_ARTICLES)
    p.add_argument("--seed", type=int, default=0, help="must match train.py's --seed (same held-out articles)")
    p.add_argument("--split", choices=("auto", "train", "campaign"), default="auto",
                   help="whose held-out articles (auto: the recipe named in the reader's config)")
    p.add_argument("--objective", choices=("mean", "covidqa"), default="mean")
    p.add_argument("--dry-run", action="store_true", help="print the grid, do not write the config")
    args = p.parse_args(argv)

    split = training_split(args.model) if args.split == "auto" else args.split
    covid_held, xquad_held = heldout_sets(Path(args.data_dir), split, args.holdout_articles, args.seed)
    reader = Reader.from_pretrained(args.model)
    reader.progress = False
    with torch.inference_mode():
        sets = {"covidqa": collect(reader, covid_held), "xquad": collect(reader, xquad_held)}
    print(", ".join(f"{name}: {len(rows)} held-out questions" for name, rows in sets.items()))
    points = [(w, tau, m) for w in WEIGHTS for tau in TEMPERATURES for m in MBR_TEMPERATURES
              if w or tau == TEMPERATURES[0]]
    grid = {pt: {name: score(reader, rows, *pt) for name, rows in sets.items()} for pt in points}
    objective = (lambda f: (f["covidqa"] + f["xquad"]) / 2) if args.objective == "mean" else (lambda f: f["covidqa"])
    for (w, tau, m), f in grid.items():
        print(f"weight {w:4.1f}  temperature {tau:5.2f}  mbr {m:4.2f}  "
              f"F1 covidqa {f['covidqa']:5.1f}  xquad {f['xquad']:5.1f}  objective {objective(f):5.1f}")
    (w, tau, m), best = max(grid.items(), key=lambda kv: objective(kv[1]))
    plain = grid[(0.0, TEMPERATURES[0], 0.0)]
    print(f"best: weight {w} temperature {tau} mbr {m}: F1 covidqa {best['covidqa']:.1f} xquad {best['xquad']:.1f} "
          f"(plain decoding: {plain['covidqa']:.1f} / {plain['xquad']:.1f})")
    if args.dry_run:
        return
    path = Path(args.model) / CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["reader"].update(retrieval_weight=w, retrieval_temperature=tau, mbr_temperature=m)
    meta.setdefault("training", {}).pop("retrieval_prior_fit", None)
    meta["training"]["decoding_fit"] = {
        "objective": args.objective, "split": split, "heldout_questions": {k: len(v) for k, v in sets.items()},
        "f1": best, "f1_plain_decoding": plain}
    path.write_text(json.dumps(meta, indent=2))
    print(f"wrote retrieval_weight={w}, retrieval_temperature={tau}, mbr_temperature={m} into {path}")


if __name__ == "__main__":
    main()
