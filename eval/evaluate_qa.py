"""EM / F1 of a longread reader on long documents.

(a) COVID-QA dev: every question asked of its WHOLE article (no retrieval, no truncation).
(c) ``--sets squad,squad2,cuad``: SQuAD v1.1 dev paragraphs (also reported on the articles no
    training saw), the reported third of SQuAD 2.0 dev (answerable and unanswerable: abstaining
    is right only on an unanswerable question), and whole held-out CUAD contracts (CUAD's AUPR
    and precision at 80% recall over the answers and alternatives, with a longer span limit).
    ``--sets removed``: SQuAD v1.1 dev questions of the articles no training or fitting saw (SQuAD
    2.0's reported third), each asked of its paragraph with the sentence holding its answer cut out
    (``longread.training.negatives``; kept when no reference answer remains): unanswerable
    on-topic questions, right only when the reader abstains.
(b) XQuAD-en in a haystack: each question's paragraph is put at a random depth among real
    Wikipedia lead sections (other articles than the paragraph's own) until the document reaches
    a target length in tokens; besides EM/F1 it reports how often the predicted span lies inside
    the inserted paragraph ("right paragraph").

EM/F1 are SQuAD's (normalised text, best over the gold answers: ``longread.metrics.text_em_f1``).
All questions of one document are asked one after the other, so from the second question on the
reader's cached document encoding is reused (``mean s first`` vs ``mean s further``).

    python eval/evaluate_qa.py                      # default reader, full run
    python eval/evaluate_qa.py --quick              # ~1 minute smoke run
    python eval/evaluate_qa.py --model DIR --haystack-tokens 4096 --limit 50

Writes results/eval_qa.json and results/eval_qa.md (``--out``).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DATA_DIR, PROJECT_ROOT, environment, load_squad, load_wiki, markdown_table,  # noqa: E402
                     norm_title, reader_description, reader_from_args, report)

from longread.metrics import expected_calibration_error, roc_auc, text_em_f1  # noqa: E402

QUICK_COVID_ARTICLES = 2
QUICK_COVID_QUESTIONS = 20
QUICK_HAYSTACK_QUESTIONS = 10
QUICK_HAYSTACK_TOKENS = (4096,)
SEPARATOR = "\n\n"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: the shipped default reader)")
    p.add_argument("--covidqa", default=str(DATA_DIR / "covidqa" / "dev.json"), help="COVID-QA SQuAD JSON")
    p.add_argument("--xquad", default=str(DATA_DIR / "xquad" / "xquad.en.json"), help="XQuAD-en SQuAD JSON")
    p.add_argument("--wiki", default=str(DATA_DIR / "wiki" / "summaries_en.json"),
                   help="Wikipedia lead sections used as haystack filler (dict title -> {extract, ...})")
    p.add_argument("--haystack-tokens", default=None,
                   help="comma-separated target document lengths in tokens (default 4096,16384,65536; "
                        "0 = the paragraph alone, no haystack)")
    p.add_argument("--haystack-questions", type=int, default=None,
                   help="XQuAD questions per haystack length (default 100; whole paragraphs are drawn, "
                        "so consecutive questions share a document)")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions per set")
    p.add_argument("--sets", default="covidqa,haystack",
                   help="which sets to run: covidqa, haystack, squad (SQuAD v1.1 dev paragraphs), squad2 (the "
                        "reported third of SQuAD 2.0 dev, answerable and unanswerable), cuad (held-out CUAD "
                        "contracts, whole), removed (SQuAD dev questions asked of their paragraph without the "
                        "answer's sentence: unanswerable)")
    p.add_argument("--squad", default=str(DATA_DIR / "squad" / "dev-v1.1.json"))
    p.add_argument("--squad2", default=str(DATA_DIR / "squad" / "dev-v2.0.json"))
    p.add_argument("--cuad", default=str(DATA_DIR / "cuad" / "train.json"),
                   help="CUAD file; its contracts held out of training (longread.training.corpora) are asked")
    p.add_argument("--cuad-answer-tokens", type=int, default=160, help="longest clause answer, in tokens")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_COVID_QUESTIONS} COVID-QA questions from the {QUICK_COVID_ARTICLES} shortest "
                        f"articles + {QUICK_HAYSTACK_QUESTIONS} haystack questions at 4096 tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--xquad-questions", choices=("heldout", "unseen", "all"), default="heldout",
                   help="heldout (default): only XQuAD articles train.py holds out (its --seed 0 split, which "
                        "needs --covidqa-train); unseen: XQuAD articles outside the two SQuAD 2.0 dev parts that "
                        "longread.training.campaign trains and fits on (it never trains on XQuAD's questions); "
                        "all: every question")
    p.add_argument("--covidqa-train", default=str(DATA_DIR / "covidqa" / "train.json"),
                   help="COVID-QA train file (the training split draws its held-out articles first)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (the reader's default), float32, bfloat16")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy machine)")
    p.add_argument("--out", default=str(PROJECT_ROOT / "results" / "eval_qa.json"),
                   help="JSON output path; the markdown table goes next to it (.md)")
    p.add_argument("--no-predictions", action="store_true", help="leave per-question records out of the JSON")
    args = p.parse_args(argv)
    if args.haystack_tokens is None:
        args.haystack_tokens = ",".join(map(str, QUICK_HAYSTACK_TOKENS)) if args.quick else "4096,16384,65536"
    args.haystack_tokens = [int(x) for x in str(args.haystack_tokens).split(",") if x.strip()]
    if args.haystack_questions is None:
        args.haystack_questions = QUICK_HAYSTACK_QUESTIONS if args.quick else 100
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = set(args.sets) - {"covidqa", "haystack", "squad", "squad2", "cuad", "removed"}
    if unknown:
        p.error(f"unknown --sets {sorted(unknown)}")
    return args


# ----------------------------------------------------------------------------- question loop
def ask_all(reader, jobs: List[dict], desc: str, records: List[dict]) -> None:
    """``jobs``: one per document, ``{"text", "qas", ...extra}``; questions of a document are asked
    consecutively (the first one pays for tokenization + document encoding)."""
    total = sum(len(j["qas"]) for j in jobs)
    with tqdm(total=total, desc=desc, unit="q") as bar:
        for job in jobs:
            for i, qa in enumerate(job["qas"]):
                t0 = time.perf_counter()
                ans = reader.answer(job["text"], question=qa["question"], **job.get("options", {}))
                seconds = time.perf_counter() - t0
                prediction = "" if ans.no_answer else ans.text
                if qa["answers"]:
                    em, f1 = text_em_f1(prediction, qa["answers"]) if prediction else (0.0, 0.0)
                else:                                        # unanswerable: right only when abstaining
                    em = f1 = float(not prediction)
                rec = {"id": qa["id"], "question": qa["question"], "prediction": prediction,
                       "best_guess": ans.text, "no_answer_score": ans.no_answer_score,
                       "candidates": [(a.text, a.score) for a in [ans] + ans.alternatives],
                       "answers": qa["answers"], "em": em, "f1": f1, "score": ans.score,
                       "seconds": seconds, "first_on_document": i == 0,
                       "doc_tokens": reader.prepare(job["text"]).num_tokens, "document": job["name"]}
                if "needle" in job:
                    n0, n1 = job["needle"]
                    rec["needle_chars"] = [n0, n1]
                    rec["depth"] = job["depth"]
                    rec["right_paragraph"] = bool(n0 <= ans.start and ans.end <= n1)
                records.append(rec)
                bar.update(1)
                bar.set_postfix(f1=f"{100 * np.mean([r['f1'] for r in records]):.1f}")


def summarize(records: List[dict]) -> dict:
    if not records:
        return {"n": 0}
    secs = np.array([r["seconds"] for r in records])
    first = np.array([r["first_on_document"] for r in records])
    f1s = np.array([r["f1"] for r in records])
    out = {
        "n": len(records),
        "documents": len({r["document"] for r in records}),
        "em": 100.0 * float(np.mean([r["em"] for r in records])),
        "f1": 100.0 * float(f1s.mean()),
        "f1_95ci": bootstrap_ci(f1s),
        "abstained_pct": 100.0 * float(np.mean([not r["prediction"] for r in records])),
        "ece": calibration_error(records),
        "mean_s_per_question": float(secs.mean()),
        "mean_s_first_question": float(secs[first].mean()) if first.any() else None,
        "mean_s_further_question": float(secs[~first].mean()) if (~first).any() else None,
        "mean_doc_tokens": float(np.mean([r["doc_tokens"] for r in records])),
        "max_doc_tokens": int(max(r["doc_tokens"] for r in records)),
    }
    if "right_paragraph" in records[0]:
        out["right_paragraph_rate"] = 100.0 * float(np.mean([r["right_paragraph"] for r in records]))
    has = [r for r in records if r["answers"]]
    if has and any(not r["prediction"] for r in has):
        # the answerable questions as a reader that never abstains would score them (allow_no_answer=False:
        # SQuAD v1.1's own protocol, every question there has an answer)
        out["always_answering_f1"] = 100.0 * float(np.mean([text_em_f1(r["best_guess"], r["answers"])[1]
                                                            for r in has]))
    if len(has) < len(records):
        out["has_answer_f1"] = 100.0 * float(np.mean([r["f1"] for r in has])) if has else None
        out["no_answer_accuracy"] = 100.0 * float(np.mean([r["f1"] for r in records if not r["answers"]]))
        if has and all(r.get("no_answer_score") is not None for r in records):
            out["no_answer_auc"] = no_answer_auc(records)
    return out


def no_answer_auc(records: List[dict]) -> float:
    """How well the no-answer margin, log P(no answer) - log P(best span), tells the unanswerable
    questions from the answerable ones whatever the threshold (ROC AUC: 0.5 is chance, 1 perfect)."""
    def margin(r):
        best = r["candidates"][0][1] if r["candidates"] else 0.0
        return np.log(max(r["no_answer_score"], 1e-300)) - np.log(max(best, 1e-300))
    return roc_auc([margin(r) for r in records], [not r["answers"] for r in records])


def calibration_error(records: List[dict]) -> Optional[float]:
    """Expected calibration error (10 bins) of what the reader reports: ``Answer.score`` for an
    answer, P(no answer) for a verdict; right = F1 >= 0.5 (a verdict on an unanswerable question)."""
    conf = [r["no_answer_score"] if not r["prediction"] else r["score"] for r in records]
    if any(c is None for c in conf):
        return None
    return expected_calibration_error(conf, [r["f1"] >= 0.5 for r in records])[0]


def bootstrap_ci(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> List[float]:
    """95% percentile-bootstrap interval of the mean (x100), over questions."""
    if len(values) < 2:
        return [None, None]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [100.0 * float(np.percentile(means, 2.5)), 100.0 * float(np.percentile(means, 97.5))]


# ----------------------------------------------------------------------------- SQuAD, SQuAD 2.0, CUAD
@functools.lru_cache(maxsize=None)
def squad2_articles(squad2_path) -> Dict[str, set]:
    """The titles of SQuAD 2.0 dev's three article parts (``corpora.squad2_parts``), read once."""
    from longread.training.corpora import read_squad_json, squad2_parts

    return squad2_parts(read_squad_json(squad2_path))


def squad2_fitted_articles(squad2_path) -> set:
    """Titles of the SQuAD 2.0 dev articles a campaign reader has used: the part whose unanswerable
    questions it trains on and the part its no-answer threshold and decoding are fitted on."""
    parts = squad2_articles(squad2_path)
    return parts["train"] | parts["calibrate"]


def answer_removed_jobs(docs: List[dict], limit: Optional[int], seed: int) -> List[dict]:
    """Each answerable question of ``docs`` asked of its paragraph with the sentence(s) holding its
    first reference answer removed, kept when no reference answer occurs in what remains
    (case-insensitive); questions whose remainders are the same text share a job."""
    from longread.training.data import QARecord
    from longread.training.negatives import remove_answer_sentences

    by_text: Dict[str, dict] = {}
    for d in docs:
        for qa in d["qas"]:
            if not qa["answers"]:
                continue
            gold = qa["answers"][0]
            rest = remove_answer_sentences(QARecord(qa["id"], qa["question"], d["context"], gold,
                                                    d["context"].find(gold), d["title"]))
            if rest is None or any(a.strip().lower() in rest.lower() for a in qa["answers"]):
                continue
            job = by_text.setdefault(rest, {"context": rest, "qas": [], "title": d["title"],
                                            "paragraph": d["paragraph"]})
            job["qas"].append({"id": qa["id"] + "-removed", "question": qa["question"], "answers": []})
    return paragraph_jobs(list(by_text.values()), "removed", limit, seed)


def paragraph_jobs(docs: List[dict], name: str, limit: Optional[int], seed: int) -> List[dict]:
    order = np.random.default_rng(seed).permutation(len(docs))
    jobs, left = [], limit
    for i in order:
        d = docs[int(i)]
        qas = d["qas"] if left is None else d["qas"][:left]
        if not qas:
            continue
        jobs.append({"name": f"{name}:{d['title']}.{d['paragraph']}", "text": d["context"], "qas": qas,
                     "title": d["title"]})
        if left is not None:
            left -= len(qas)
            if left <= 0:
                break
    return jobs


def cuad_jobs(path, limit: Optional[int], answer_tokens: int) -> List[dict]:
    """Whole contracts held out of training, every clause question of each (answers: all its clauses)."""
    from longread.training.corpora import HELD, split_by_article

    docs = load_squad(path, unanswerable=True)
    titles = {d["title"] for d in docs}
    from longread.training.data import QARecord

    _, held = split_by_article([QARecord(t, "", "", "", -1, t) for t in sorted(titles)], HELD["cuad"])
    held_titles = {r.article for r in held}
    jobs, left = [], limit
    for d in docs:
        if d["title"] not in held_titles:
            continue
        qas = d["qas"] if left is None else d["qas"][:left]
        if not qas:
            continue
        jobs.append({"name": f"cuad:{d['title']}", "text": d["context"], "qas": qas,
                     "options": {"max_answer_tokens": answer_tokens, "top_k": 5, "allow_no_answer": False}})
        if left is not None:
            left -= len(qas)
            if left <= 0:
                break
    return jobs


def drop_long_questions(jobs: List[dict], reader) -> int:
    """Drop (in place) the questions longer than the reader takes (one CUAD clause question of 41
    is; training skips it too). Returns how many were dropped."""
    limit, dropped = reader.config.layout.max_question_tokens, 0
    for job in jobs:
        keep = [qa for qa in job["qas"] if len(reader.tokenizer(qa["question"])["input_ids"]) <= limit]
        dropped += len(job["qas"]) - len(keep)
        job["qas"] = keep
    jobs[:] = [j for j in jobs if j["qas"]]
    return dropped


def jaccard(a: str, b: str) -> float:
    from longread.metrics import normalize_answer

    x, y = set(normalize_answer(a).split()), set(normalize_answer(b).split())
    return len(x & y) / len(x | y) if x | y else 1.0


def cuad_metrics(records: List[dict]) -> dict:
    """CUAD's metrics: predicted clauses (each answer and its alternatives, with their scores) kept
    above a confidence threshold; a prediction is right when its word Jaccard with a gold clause
    is at least 0.5. Precision/recall swept over the threshold: AUPR and precision at 80% recall."""
    preds = [(score, text, k) for k, r in enumerate(records) for text, score in r["candidates"]]
    golds = sum(len(r["answers"]) for r in records)
    if not preds or not golds:
        return {"aupr": None, "precision_at_80_recall": None}
    preds.sort(key=lambda p: -p[0])
    matched, tp, curve = set(), 0, []
    for n, (score, text, k) in enumerate(preds, 1):
        hit = [g for g, gold in enumerate(records[k]["answers"]) if jaccard(text, gold) >= 0.5]
        if hit:
            tp += 1
            matched.update((k, g) for g in hit)
        curve.append((len(matched) / golds, tp / n))
    recall = np.array([c[0] for c in curve])
    precision = np.maximum.accumulate(np.array([c[1] for c in curve])[::-1])[::-1]     # interpolated
    aupr = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
    at80 = precision[recall >= 0.8]
    return {"aupr": 100 * aupr, "precision_at_80_recall": 100 * float(at80.max()) if len(at80) else 0.0,
            "max_recall": 100 * float(recall.max())}


# ----------------------------------------------------------------------------- COVID-QA
def covid_jobs(path, quick: bool, limit: Optional[int]) -> List[dict]:
    docs = [d for d in load_squad(path) if d["qas"]]
    if quick:
        per_doc = QUICK_COVID_QUESTIONS // QUICK_COVID_ARTICLES
        enough = [d for d in docs if len(d["qas"]) >= per_doc] or docs
        docs = sorted(enough, key=lambda d: len(d["context"]))[:QUICK_COVID_ARTICLES]
        docs = [{**d, "qas": d["qas"][:per_doc]} for d in docs]
    jobs, left = [], limit
    for d in docs:
        qas = d["qas"] if left is None else d["qas"][:left]
        if not qas:
            break
        jobs.append({"name": f"covidqa:{d['article']}", "text": d["context"], "qas": qas})
        if left is not None:
            left -= len(qas)
    return jobs


# ----------------------------------------------------------------------------- haystack
class FillerPool:
    """Wikipedia lead sections with lazily counted token lengths."""

    def __init__(self, wiki: Dict[str, dict], tokenizer):
        self.titles = [t for t, v in wiki.items() if (v.get("extract") or "").strip()]
        self.texts = [wiki[t]["extract"].strip() for t in self.titles]
        self.norm = [norm_title(t) for t in self.titles]
        self.tokenizer = tokenizer
        self._ntok: Dict[int, int] = {}

    def num_tokens(self, i: int) -> int:
        if i not in self._ntok:
            self._ntok[i] = len(self.tokenizer(self.texts[i], add_special_tokens=False, verbose=False)["input_ids"])
        return self._ntok[i]

    def truncated(self, i: int, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens of text i (cut at a token end)."""
        enc = self.tokenizer(self.texts[i], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        return self.texts[i][: offsets[max_tokens - 1][1]] if max_tokens > 0 else ""


def build_haystack(needle: str, exclude_title: str, pool: FillerPool, target_tokens: int,
                   rng: np.random.Generator, tokenizer) -> dict:
    """Lead sections (never the needle's own article) around ``needle`` at a random slot, until
    the whole reaches ``target_tokens`` tokens (the last filler is cut to fit)."""
    total = len(tokenizer(needle, add_special_tokens=False, verbose=False)["input_ids"])
    fillers = []
    banned = norm_title(exclude_title)
    for i in rng.permutation(len(pool.texts)):
        if total >= target_tokens:
            break
        if pool.norm[i] == banned:
            continue
        n = pool.num_tokens(int(i))
        if total + n > target_tokens:
            fillers.append(pool.truncated(int(i), target_tokens - total))
            total = target_tokens
            break
        fillers.append(pool.texts[i])
        total += n
    if total < target_tokens:
        raise SystemExit(f"the wiki file has too little text for a {target_tokens}-token haystack")
    slot = int(rng.integers(0, len(fillers) + 1))
    before = SEPARATOR.join(fillers[:slot])
    start = len(before) + (len(SEPARATOR) if slot else 0)
    parts = fillers[:slot] + [needle] + fillers[slot:]
    text = SEPARATOR.join(parts)
    assert text[start:start + len(needle)] == needle
    return {"text": text, "needle": (start, start + len(needle)), "depth": start / max(1, len(text) - len(needle))}


def heldout_question_ids(covidqa_train: str, xquad_path: str) -> set:
    """Ids of the XQuAD questions the training script holds out (same files, same seed-0 draws:
    COVID-QA train articles first, then 6 XQuAD articles)."""
    import random

    from longread.training.data import load_squad_records
    from longread.training.train import HOLDOUT_ARTICLES, XQUAD_HOLDOUT_ARTICLES, split_articles

    if not Path(covidqa_train).is_file():
        raise SystemExit(f"--xquad-questions heldout needs the COVID-QA train file ({covidqa_train} not found): "
                         "pass --covidqa-train PATH, or --xquad-questions all")
    rng = random.Random(0)
    split_articles(load_squad_records(covidqa_train), HOLDOUT_ARTICLES, rng)
    _, held = split_articles(load_squad_records(xquad_path), XQUAD_HOLDOUT_ARTICLES, rng)
    return {r.id for r in held}


def haystack_questions(xquad_path, n_questions: int, seed: int, keep_ids: Optional[set] = None) -> List[dict]:
    """Whole paragraphs drawn in a seeded order until ``n_questions`` questions are collected
    (only questions in ``keep_ids`` when given)."""
    paragraphs = [d for d in load_squad(xquad_path) if d["qas"]]
    if keep_ids is not None:
        paragraphs = [{**d, "qas": [q for q in d["qas"] if q["id"] in keep_ids]} for d in paragraphs]
        paragraphs = [d for d in paragraphs if d["qas"]]
    order = np.random.default_rng(seed).permutation(len(paragraphs))
    chosen, count = [], 0
    for i in order:
        if count >= n_questions:
            break
        d = paragraphs[int(i)]
        qas = d["qas"][: n_questions - count]
        chosen.append({**d, "qas": qas})
        count += len(qas)
    return chosen


def haystack_jobs(paragraphs: List[dict], pool: FillerPool, tokenizer, target: int, seed: int) -> List[dict]:
    jobs = []
    for k, d in enumerate(paragraphs):
        name = f"xquad:{d['article']}.{d['paragraph']}@{target}"
        if target <= 0:
            jobs.append({"name": name, "text": d["context"], "qas": d["qas"], "needle": (0, len(d["context"])),
                         "depth": 0.0})
            continue
        rng = np.random.default_rng([seed, target, k])
        hay = build_haystack(d["context"], d["title"], pool, target, rng, tokenizer)
        jobs.append({"name": name, "qas": d["qas"], **hay})
    return jobs


# ----------------------------------------------------------------------------- main
def render_markdown(result: dict) -> str:
    env, rows = result["environment"], []
    for name, s in result["sets"].items():
        ci = s.get("f1_95ci") or [None, None]
        interval = f"{ci[0]:.1f}–{ci[1]:.1f}" if ci[0] is not None else None
        rows.append([name, s.get("n"), s.get("documents"), s.get("mean_doc_tokens"), s.get("em"), s.get("f1"),
                     interval, s.get("abstained_pct"), s.get("ece"), s.get("right_paragraph_rate"),
                     s.get("mean_s_first_question"), s.get("mean_s_further_question")])
    table = markdown_table(["set", "questions", "docs", "mean doc tokens", "EM", "F1", "F1 95% CI", "abstained %",
                            "ECE", "right paragraph %", "mean s first", "mean s further"], rows)
    keys = ("has_answer_f1", "no_answer_accuracy", "aupr", "precision_at_80_recall", "max_recall")
    keys += ("no_answer_auc", "always_answering_f1")
    extra = [f"- {name}: " + ", ".join(f"{k} {s[k]:.3f}" if k == "no_answer_auc" else f"{k} {s[k]:.1f}"
                                       for k in keys if s.get(k) is not None)
             for name, s in result["sets"].items()
             if any(s.get(k) is not None for k in ("has_answer_f1", "aupr", "always_answering_f1"))]
    m = result["model"]
    return "\n".join([
        "# longread QA evaluation", "",
        f"- model: {m['model']} ({m['dtype']}, question_free_layers={m['encoder']['question_free_layers']}, "
        f"window={tuple(m['encoder']['attention_window'])})",
        f"- device: {env['device_name']} ({env['device']}, {env['torch_threads']} torch threads), "
        f"torch {env['torch_version']}, {env['date']}",
        f"- command: `{env['command']}`", "", table, "", *extra, "",
        "EM/F1: SQuAD normalisation, best over gold answers; an unanswerable question scores 1 when the reader "
        "abstains, an answerable one 0; 95% CI: bootstrap over questions. ECE: expected calibration error (10 "
        "bins) of the reported confidence (Answer.score, or P(no answer) for a verdict) against F1 >= 0.5. "
        "'first' = first question on a document "
        "(tokenize + encode + read); 'further' = later questions on the same (cached) document. "
        "always_answering_f1: the answerable questions scored on the reader's best guess, as with "
        "allow_no_answer=False (SQuAD v1.1's protocol); no_answer_auc: ROC AUC of log P(no answer) - "
        "log P(best span) for telling unanswerable questions from answerable ones (0.5 = chance).",
        "Haystack: XQuAD-en paragraph at a random depth among other Wikipedia lead sections; "
        "'right paragraph' = predicted span inside the inserted paragraph.",
    ])


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    reader = reader_from_args(args)
    result = {"environment": environment(reader.device, "eval/evaluate_qa.py", argv),
              "model": reader_description(reader, args.model),
              "settings": {"quick": args.quick, "limit": args.limit, "seed": args.seed,
                           "haystack_tokens": args.haystack_tokens, "haystack_questions": args.haystack_questions,
                           "covidqa": args.covidqa, "xquad": args.xquad, "xquad_questions": args.xquad_questions,
                           "wiki": args.wiki},
              "sets": {}}
    predictions: Dict[str, List[dict]] = {}

    if "covidqa" in args.sets:
        records: List[dict] = []
        ask_all(reader, covid_jobs(args.covidqa, args.quick, args.limit), "COVID-QA", records)
        result["sets"]["covidqa"] = summarize(records)
        predictions["covidqa"] = records

    if "squad" in args.sets:
        seen = squad2_fitted_articles(args.squad2)
        records = []
        ask_all(reader, paragraph_jobs(load_squad(args.squad), "squad", args.limit, args.seed), "SQuAD dev", records)
        result["sets"]["squad_dev"] = summarize(records)
        unseen = [r for r in records if r["document"].split(":", 1)[1].rsplit(".", 1)[0] not in seen]
        result["sets"]["squad_dev_unseen_articles"] = summarize(unseen)
        predictions["squad_dev"] = records

    if "squad2" in args.sets:
        test = squad2_articles(args.squad2)["test"]
        docs = [d for d in load_squad(args.squad2, unanswerable=True) if d["title"] in test]
        records = []
        ask_all(reader, paragraph_jobs(docs, "squad2", args.limit, args.seed), "SQuAD 2.0 test part", records)
        result["sets"]["squad2_test_part"] = summarize(records)
        predictions["squad2_test_part"] = records

    if "removed" in args.sets:
        test = squad2_articles(args.squad2)["test"]
        docs = [d for d in load_squad(args.squad) if d["title"] in test]
        records = []
        ask_all(reader, answer_removed_jobs(docs, args.limit, args.seed), "SQuAD dev, answer removed", records)
        result["sets"]["squad_answer_removed"] = summarize(records)
        predictions["squad_answer_removed"] = records

    if "cuad" in args.sets:
        records = []
        jobs = cuad_jobs(args.cuad, args.limit, args.cuad_answer_tokens)
        over = drop_long_questions(jobs, reader)
        ask_all(reader, jobs, "CUAD held-out", records)
        result["sets"]["cuad_heldout"] = {**summarize(records), **cuad_metrics(records), "questions_over_limit": over}
        predictions["cuad_heldout"] = records

    if "haystack" in args.sets and args.haystack_tokens:
        n = args.haystack_questions if args.limit is None else min(args.haystack_questions, args.limit)
        keep = heldout_question_ids(args.covidqa_train, args.xquad) if args.xquad_questions == "heldout" else None
        if args.xquad_questions == "unseen":
            seen = squad2_fitted_articles(args.squad2)
            keep = {qa["id"] for d in load_squad(args.xquad) if d["title"] not in seen for qa in d["qas"]}
        paragraphs = haystack_questions(args.xquad, n, args.seed, keep)
        pool = FillerPool(load_wiki(args.wiki), reader.tokenizer)
        for target in args.haystack_tokens:
            records = []
            jobs = haystack_jobs(paragraphs, pool, reader.tokenizer, target, args.seed)
            ask_all(reader, jobs, f"XQuAD haystack {target}", records)
            name = f"xquad_haystack_{target}" if target > 0 else "xquad_paragraph_only"
            result["sets"][name] = summarize(records)
            predictions[name] = records

    if not args.no_predictions:
        result["predictions"] = predictions
    report(args.out, result, render_markdown(result))
    return result


if __name__ == "__main__":
    main()
