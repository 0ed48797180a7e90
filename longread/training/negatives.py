"""Unanswerable training questions made from answerable ones.

``answer_removed``: a question asked of its own paragraph with the sentence that holds its answer
cut out. The paragraph stays on topic (same entities, same wording as the question), so the
reader cannot tell it from an answering one by topic alone, as with SQuAD 2.0's unanswerable
questions; the label is "no answer". A question is kept only when its answer text no longer
occurs in what remains (case-insensitive), and at least ``min_sentences`` sentences remain.
"""
from __future__ import annotations

import random
import re
from typing import List, Optional, Sequence, Tuple

from .data import QARecord

# a sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before white
# space and an upper-case letter, a digit or an opening quote or bracket
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")


def sentence_spans(text: str) -> List[Tuple[int, int]]:
    """(start, end) character spans of ``text``'s sentences; each end includes the white space that
    follows the sentence, so the spans tile ``text`` exactly."""
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        cut = m.end()
        if cut > start:
            spans.append((start, cut))
            start = cut
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def remove_answer_sentences(record: QARecord, min_sentences: int = 2) -> Optional[str]:
    """``record``'s context without the sentences its answer overlaps, or None when the answer
    text still occurs in the rest or fewer than ``min_sentences`` sentences would remain."""
    if record.answer_start < 0 or not record.answer_text:
        return None
    a0, a1 = record.answer_start, record.answer_start + len(record.answer_text)
    spans = sentence_spans(record.context)
    kept = [(s, e) for s, e in spans if e <= a0 or s >= a1]
    if len(kept) < min_sentences:
        return None
    rest = "".join(record.context[s:e] for s, e in kept).strip()
    if record.answer_text.strip().lower() in rest.lower():
        return None
    return rest


def answer_removed(records: Sequence[QARecord], fraction: float, rng: random.Random,
                   min_sentences: int = 2) -> List[QARecord]:
    """For about ``fraction`` of the answerable ``records`` (drawn with ``rng``), the same question
    asked of its context with the answer's sentences removed: ``answer_start = -1``."""
    out = []
    for r in records:
        if r.answer_start < 0 or rng.random() >= fraction:
            continue
        rest = remove_answer_sentences(r, min_sentences)
        if rest is not None:
            out.append(QARecord(r.id + "-removed", r.question, rest, "", -1, r.article))
    return out


# ---------------------------------------------------------------------------------------------
# Questions changed so that their paragraph no longer answers them (SQuAD 2.0's commonest kinds
# of unanswerable question: an entity or number swapped, a word replaced by its antonym, a
# negation): the paragraph is the question's own, so topic and wording still match it.

ANTONYMS = {a: b for x, y in (
    ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"), ("longest", "shortest"),
    ("first", "last"), ("earliest", "latest"), ("oldest", "youngest"), ("most", "least"),
    ("best", "worst"), ("before", "after"), ("increase", "decrease"), ("increased", "decreased"),
    ("north", "south"), ("east", "west"), ("northern", "southern"), ("eastern", "western"),
    ("maximum", "minimum"), ("larger", "smaller"), ("higher", "lower"), ("more", "fewer"),
    ("win", "lose"), ("won", "lost"), ("start", "end"), ("began", "ended"), ("major", "minor"),
    ("positive", "negative"), ("strong", "weak"), ("strongest", "weakest"), ("rich", "poor"),
    ("early", "late"), ("top", "bottom"), ("upper", "lower"), ("inner", "outer"), ("allowed", "banned"),
) for a, b in ((x, y), (y, x))}
_AUXILIARY = re.compile(r"\b(is|are|was|were|did|does|do|can|could|will|would|has|have|had|should|must)\b(?! not\b)",
                        re.I)
_NEGATED = {"can": "can't", "will": "won't", "do": "don't"}     # the rest: + n't
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_WORD = re.compile(r"[A-Za-z]+")
# a run of capitalised words (inner "of"/"the"/"de"/"and" allowed), or a number
_NAME = re.compile(r"\b[A-Z][\w'\-]*(?:\s+(?:(?:of|the|de|and|von|van)\s+)?[A-Z][\w'\-]*)*|\b\d[\d,]*\b")
_QUESTION_WORDS = {"what", "who", "whom", "whose", "when", "where", "which", "why", "how", "in", "on", "at",
                   "the", "a", "an", "during", "after", "before", "by", "for", "from", "of", "to", "is", "are",
                   "was", "were", "did", "does", "do", "can", "according", "along", "with", "i"}


def _names(text: str) -> List[Tuple[int, int]]:
    """Spans of names (capitalised runs, dropping a leading question or function word) and numbers."""
    out = []
    for m in _NAME.finditer(text):
        s, e = m.span()
        first = _WORD.match(text, s)
        while first and first.group().lower() in _QUESTION_WORDS:
            nxt = re.compile(r"\s+").match(text, first.end())
            if not nxt or nxt.end() >= e:
                s = e
                break
            s = nxt.end()
            first = _WORD.match(text, s)
        if text.endswith("'s", s, e) or text.endswith("’s", s, e):    # a possessive: the name without it
            e -= 2
        if e > s:
            out.append((s, e))
    return out


def _absent(phrase: str, context_lower: str) -> bool:
    return phrase.lower() not in context_lower


def _kind(name: str) -> str:
    return "number" if name[0].isdigit() else "month" if name.lower() in _MONTHS else "name"


def _swap_name(record: QARecord, pool: Sequence[str], rng: random.Random) -> Optional[str]:
    q, ctx, answer = record.question, record.context.lower(), record.answer_text.lower()
    names = set(pool)
    spans = [(s, e) for s, e in _names(q) if _long_enough(q[s:e]) and (s > 0 or q[s:e] in names)
             and not _absent(q[s:e], ctx) and q[s:e].lower() not in answer]
    if not spans:
        return None
    s, e = rng.choice(spans)
    old = q[s:e]
    kind, words = _kind(old), set(old.lower().split())
    initials = "".join(w[0] for w in old.split() if w[0].isupper())
    choices = [p for p in pool if _kind(p) == kind and _absent(p, ctx) and p.lower() not in answer
               and not words & set(p.lower().split()) and abs(len(p.split()) - len(old.split())) <= 1
               and p.replace(".", "") != initials]
    if not choices:
        return None
    return q[:s] + rng.choice(choices) + q[e:]


def _long_enough(name: str) -> bool:
    """A number, or a name of three letters or more (not "BC", "AD", "Dr")."""
    return name[0].isdigit() or len(name) >= 3


def article_names(texts: Sequence[str]) -> List[str]:
    """Names (capitalised runs, months, numbers) the article's ``texts`` use other than as a
    sentence's first word (a name, not just a capitalised sentence opening), sorted."""
    names = set()
    for text in texts:
        for s, e in _names(text):
            before = text[:s].rstrip()
            if _long_enough(text[s:e]) and (text[s].isdigit() or (before and before[-1] not in ".!?\"'(:;")):
                names.add(text[s:e])
    return sorted(names)


def _swap_antonym(record: QARecord, rng: random.Random) -> Optional[str]:
    q, ctx = record.question, record.context
    words = set(_WORD.findall(ctx.lower()))
    hits = [m for m in _WORD.finditer(q) if m.group().lower() in ANTONYMS and ANTONYMS[m.group().lower()] not in words]
    if not hits:
        return None
    m = rng.choice(hits)
    new = ANTONYMS[m.group().lower()]
    new = new.capitalize() if m.group()[0].isupper() else new
    return q[:m.start()] + new + q[m.end():]


def _negate(record: QARecord, rng: random.Random) -> Optional[str]:
    q = record.question
    if re.search(r"\bnot\b|n't\b|\bnever\b", q, re.I):
        return None
    m = _AUXILIARY.search(q)
    if m is None:
        return None
    word = m.group()
    negated = _NEGATED.get(word.lower(), word + "n't")
    return q[:m.start()] + (negated.capitalize() if word[0].isupper() else negated) + q[m.end():]


def perturb_question(record: QARecord, pool: Sequence[str], rng: random.Random,
                     negation_rate: float = 0.3) -> Optional[Tuple[str, str]]:
    """(kind, question) for ``record``'s question changed so that its paragraph no longer answers
    it, or None when no kind applies: ``name`` swaps a name, month or number the paragraph mentions
    for one of the same kind from ``pool`` (:func:`article_names`) it does not (nor its initials);
    ``antonym`` replaces a word by its antonym when the paragraph never uses the antonym; failing
    both (tried in a random order), with probability ``negation_rate``, ``negation`` negates the
    first auxiliary verb ("did" -> "didn't"; rarer in SQuAD 2.0 than the other two). The answer's
    own words are never changed."""
    if record.answer_start < 0:
        return None
    order = ["name", "antonym"]
    rng.shuffle(order)
    if rng.random() < negation_rate:
        order.append("negation")
    for kind in order:
        new = (_swap_name(record, pool, rng) if kind == "name" else
               _swap_antonym(record, rng) if kind == "antonym" else _negate(record, rng))
        if new is not None and new != record.question:
            return kind, new
    return None


def question_perturbed(records: Sequence[QARecord], fraction: float, rng: random.Random,
                       negation_rate: float = 0.3) -> List[QARecord]:
    """For about ``fraction`` of the answerable ``records`` (drawn with ``rng``), the question
    changed by :func:`perturb_question` and asked of its own paragraph: ``answer_start = -1``."""
    contexts: dict = {}
    for r in records:
        contexts.setdefault(r.article, {})[r.context] = None
    pools: dict = {}
    out = []
    for r in records:
        if r.answer_start < 0 or rng.random() >= fraction:
            continue
        if r.article not in pools:
            pools[r.article] = article_names(list(contexts[r.article]))
        got = perturb_question(r, pools[r.article], rng, negation_rate)
        if got is not None:
            out.append(QARecord(f"{r.id}-{got[0]}", got[1], r.context, "", -1, r.article))
    return out
