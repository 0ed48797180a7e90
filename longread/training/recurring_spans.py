"""Recurring-span questions from unlabelled prose (span-selection pre-training after Splinter,
Ram et al. 2021, built as ordinary questions).

In a passage, a span (a year or a capitalised name; other numbers recur mostly by coincidence)
that occurs in exactly two of its sentences becomes a question: one of the two sentences, with
the span replaced by a question word, is the question and is *removed* from the passage; the
other occurrence is the answer ("Paris is the capital of France. [...] The Louvre, in Paris,
opened in 1793." -> "The Louvre, in what, opened in 1793?" with "Paris" found in the first
sentence). Unlike the
cloze questions (``cloze.py``), the question's own sentence is not in the context, so the reader
must recognise what the question is about in a different sentence.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterable, List

from .cloze import _SENTENCE, _question, candidate_spans, one_per_passage
from .data import QARecord


def recurring_span_records(passages: Iterable[str], n: int, seed: int = 0) -> List[QARecord]:
    """Up to ``n`` recurring-span questions, at most one per passage. Each answer occurs exactly
    once in its context (the passage without the question's sentence)."""
    return one_per_passage(passages, n, seed, _recurring)


def _recurring(rng: random.Random, pi: int, text: str):
    sentences = list(_SENTENCE.finditer(text))
    where = defaultdict(list)                     # span text -> [(sentence index, start, end, word)]
    for si, m in enumerate(sentences):
        for a, b, word in candidate_spans(m.group(), numbers=False):
            where[m.group()[a:b]].append((si, a, b, word))
    pairs = [(span, occ) for span, occ in where.items()
             if len(occ) == 2 and occ[0][0] != occ[1][0] and text.count(span) == 2]
    if not pairs:
        return None
    span, occ = rng.choice(pairs)
    q_occ, a_occ = rng.sample(occ, 2)
    q_sent = sentences[q_occ[0]]
    if not 6 <= len(q_sent.group().split()) <= 40:
        return None
    question = _question(q_sent.group(), q_occ[1], q_occ[2], q_occ[3])
    context = (text[:q_sent.start()] + text[q_sent.end():]).strip()
    lead = len(text[:q_sent.start()]) - len(text[:q_sent.start()].lstrip())
    a_sent = sentences[a_occ[0]]
    start = a_sent.start() + a_occ[1] - (len(q_sent.group()) if a_sent.start() > q_sent.start() else 0) - lead
    if context[start:start + len(span)] != span or context.count(span) != 1:
        return None
    return QARecord(id=f"recurring-{pi}", question=question, context=context, answer_text=span,
                    answer_start=start, article=f"recurring-{pi}")
