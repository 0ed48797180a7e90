"""Synthetic cloze questions from unlabelled prose (Wikipedia lead sections).

A sentence with a date, a number or a capitalised name is turned into a question by replacing
that span with a question word ("Marie Curie was born in Warsaw." -> "Marie Curie was born in
what place?"); the span is the answer and the paragraph is the context. Such questions teach
the reader to find the one sentence that matches and to cut the span, the skill a long
document needs most.
"""
from __future__ import annotations

import random
import re
from typing import Iterable, List

from .data import QARecord

_SENTENCE = re.compile(r"[^.!?]+[.!?]")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
_NAME = re.compile(r"(?<![.!?]\s)\b[A-Z][a-z]+(?:\s+(?:of\s+|de\s+|von\s+)?[A-Z][a-z]+)*")


def _question(sentence: str, start: int, end: int, word: str) -> str:
    q = (sentence[:start] + word + sentence[end:]).strip()
    return re.sub(r"[.!?]$", "?", q)


def candidate_spans(sentence: str, numbers: bool = True):
    """(start, end, question word) of the spans a question can blank in ``sentence``: years, other
    numbers (when ``numbers``), then capitalised names (not the sentence's first word, which is
    capitalised by position)."""
    out = [(a.start(), a.end(), "what year") for a in _YEAR.finditer(sentence)]
    if numbers:
        out += [(a.start(), a.end(), "how many") for a in _NUMBER.finditer(sentence) if not _YEAR.fullmatch(a.group())]
    first_word = len(sentence) - len(sentence.lstrip())
    out += [(a.start(), a.end(), "what") for a in _NAME.finditer(sentence) if a.start() > first_word]
    return out


def one_per_passage(passages: Iterable[str], n: int, seed: int, make) -> List[QARecord]:
    """Up to ``n`` records, at most one per passage: passages in a seeded random order, each given
    to ``make(rng, index, text) -> QARecord or None``."""
    rng = random.Random(seed)
    passages = list(passages)
    rng.shuffle(passages)
    out: List[QARecord] = []
    for pi, text in enumerate(passages):
        if len(out) >= n:
            break
        record = make(rng, pi, text)
        if record is not None:
            out.append(record)
    return out


def cloze_records(passages: Iterable[str], n: int, seed: int = 0) -> List[QARecord]:
    """Up to ``n`` cloze questions, at most one per passage."""
    return one_per_passage(passages, n, seed, _cloze)


def _cloze(rng: random.Random, pi: int, text: str):
    sentences = [m for m in _SENTENCE.finditer(text) if 8 <= len(m.group().split()) <= 40]
    if not sentences:
        return None
    m = rng.choice(sentences)
    sent = m.group()
    cands = candidate_spans(sent)
    if not cands:
        return None
    a, b, word = rng.choice(cands)
    question = _question(sent, a, b, word)
    if len(question.split()) < 5:
        return None
    return QARecord(id=f"cloze-{pi}", question=question, context=text, answer_text=sent[a:b],
                    answer_start=m.start() + a, article=f"cloze-{pi}")
