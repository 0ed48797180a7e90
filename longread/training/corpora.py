"""The labelled questions the reader is trained on, with held-out splits carved by article.

Every source is read from its local JSON (``../shared/data`` during development; a user passes
their own copies) into ``QARecord`` rows. A row with ``answer_start == -1`` is a question the
context does not answer. Splits are by article, so no held-out question shares a paragraph with
a trained one:

==============  =====================================  ==========================================
source          trained on                             held out (early stopping, calibration)
==============  =====================================  ==========================================
squad           SQuAD v1.1 train paragraphs            ``HELD["squad"]`` random train articles
qed             QED train paragraphs                   ``HELD["qed"]`` random paragraphs
covidqa         COVID-QA train articles (windows)      ``HELD["covidqa"]`` train articles
cuad            CUAD contracts (windows, with          ``HELD["cuad"]`` contracts
                answers outside the window = none)
squad2          SQuAD 2.0 dev *unanswerable*           two further thirds of its articles: one to
                questions of one third of articles     fit the no-answer threshold, one to report
                (and its answerable ones, optionally)
==============  =====================================  ==========================================

SQuAD 2.0 dev's articles are SQuAD v1.1 dev's (and XQuAD's): only the unanswerable questions of
the training third are trained on (with ``squad2_answerable``, its answerable ones as well), and
``squad2_parts`` names the articles so evaluation can report v1.1 dev on the articles training
never saw.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .data import QARecord, locate_answer

HELD = {"squad": 8, "qed": 300, "covidqa": 5, "cuad": 20}
SPLIT_SEED = 1234          # fixed: the held-out articles are the same in every session and stage


@dataclass
class Corpus:
    train: Dict[str, List[QARecord]]
    held: Dict[str, List[QARecord]]


def read_squad_json(path, keep_unanswerable: bool = True, answerable: bool = True) -> List[QARecord]:
    """Every question of a SQuAD-format file (v1.1 or 2.0 schema). Answerable questions keep their
    first answer, re-located by its text nearest the given offset (COVID-QA's offsets are often
    off); unanswerable ones (``is_impossible`` or no answers) get ``answer_start = -1``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    records = []
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            ctx = para["context"]
            title = article.get("title") or str(para.get("document_id", f"{Path(path).stem}-{a}"))
            for qa in para["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers") or []
                if not answers:
                    if keep_unanswerable:
                        records.append(QARecord(str(qa["id"]), qa["question"], ctx, "", -1, title))
                    continue
                if not answerable:
                    continue
                text = answers[0]["text"]
                start = locate_answer(ctx, text, int(answers[0]["answer_start"]))
                if start is not None and text.strip():
                    records.append(QARecord(str(qa["id"]), qa["question"], ctx, text, start, title))
    return records


def split_by_article(records: Sequence[QARecord], n_held: int, seed: int = SPLIT_SEED
                     ) -> Tuple[List[QARecord], List[QARecord]]:
    articles = sorted({r.article for r in records})
    random.Random(seed).shuffle(articles)
    held = set(articles[:n_held])
    return [r for r in records if r.article not in held], [r for r in records if r.article in held]


def squad2_parts(records: Sequence[QARecord], seed: int = SPLIT_SEED) -> Dict[str, set]:
    """SQuAD 2.0 dev articles in three parts: ``train`` (unanswerable questions trained on),
    ``calibrate`` (fits the no-answer threshold) and ``test`` (reported, never used for a choice)."""
    articles = sorted({r.article for r in records})
    random.Random(seed).shuffle(articles)
    third = len(articles) // 3
    return {"train": set(articles[:third]), "calibrate": set(articles[third:2 * third]),
            "test": set(articles[2 * third:])}


def load_corpus(data_dir, sources: Sequence[str] = ("squad", "qed", "covidqa", "cuad", "squad2"),
                squad2_answerable: bool = False) -> Corpus:
    """The training and held-out rows of ``sources``. ``squad2_answerable`` also trains on the
    answerable questions of SQuAD 2.0's training third (asked of the same paragraphs as its
    unanswerable ones), so that a paragraph alone never tells the reader to abstain."""
    data = Path(data_dir)
    train: Dict[str, List[QARecord]] = {}
    held: Dict[str, List[QARecord]] = {}
    files = {"squad": data / "squad" / "train-v1.1.json", "qed": data / "qed" / "train.json",
             "covidqa": data / "covidqa" / "train.json", "cuad": data / "cuad" / "train.json"}
    for name in sources:
        if name == "squad2":
            rows = read_squad_json(data / "squad" / "dev-v2.0.json")
            parts = squad2_parts(rows)
            train[name] = [r for r in rows if r.article in parts["train"] and (squad2_answerable or r.answer_start < 0)]
            held[name] = [r for r in rows if r.article in parts["calibrate"]]
            continue
        rows = read_squad_json(files[name], keep_unanswerable=(name == "cuad"))
        if name == "qed":            # one paragraph per "article": hold out paragraphs
            rows = [QARecord(r.id, r.question, r.context, r.answer_text, r.answer_start, r.id) for r in rows]
        train[name], held[name] = split_by_article(rows, HELD[name])
    return Corpus(train, held)
