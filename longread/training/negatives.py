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
