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


def cloze_records(passages: Iterable[str], n: int, seed: int = 0) -> List[QARecord]:
    """Up to ``n`` cloze questions, at most one per passage."""
    rng = random.Random(seed)
    passages = list(passages)
    rng.shuffle(passages)
    out: List[QARecord] = []
    for pi, text in enumerate(passages):
        if len(out) >= n:
            break
        sentences = [m for m in _SENTENCE.finditer(text) if 8 <= len(m.group().split()) <= 40]
        if not sentences:
            continue
        m = rng.choice(sentences)
        sent = m.group()
        cands = [(a, "what year") for a in _YEAR.finditer(sent)]
        cands += [(a, "how many") for a in _NUMBER.finditer(sent) if not _YEAR.fullmatch(a.group())]
        first_word = len(sent) - len(sent.lstrip())        # capitalised by position, not a name
        cands += [(a, "what") for a in _NAME.finditer(sent) if a.start() > first_word]
        if not cands:
            continue
        ans, word = rng.choice(cands)
        question = _question(sent, ans.start(), ans.end(), word)
        if len(question.split()) < 5:
            continue
        out.append(QARecord(id=f"cloze-{pi}", question=question, context=text, answer_text=ans.group(),
                            answer_start=m.start() + ans.start(), article=f"cloze-{pi}"))
    return out
