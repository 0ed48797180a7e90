"""Recurring-span questions: the question's own sentence is removed from the context, the answer
is the span's other occurrence, found exactly once, at the recorded offset."""
import json
from pathlib import Path

import pytest

from longread.training.recurring_spans import recurring_span_records

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki" / "summaries_en.json"

PASSAGE = ("Ada Lovelace was an English mathematician. She worked with Charles Babbage on the Analytical Engine "
           "in London. Her notes on the engine were published in 1843 and contain the first algorithm. "
           "Babbage had designed the Difference Engine before that, and in 1843 he was still seeking funds. "
           "The name of Lovelace is honoured by a programming language.")


def check(rec, original: str):
    assert rec.context[rec.answer_start:rec.answer_start + len(rec.answer_text)] == rec.answer_text
    assert rec.context.count(rec.answer_text) == 1
    assert original.count(rec.answer_text) == 2
    assert rec.answer_text not in rec.question
    assert rec.question.endswith("?")
    # the question is a sentence of the passage that the context no longer holds
    body = rec.question[:-1].replace("what year", "").replace("what", "")
    longest = max(body.split(" "), key=len)
    assert longest in original
    assert len(rec.context) < len(original)


def test_hand_written_passage():
    records = recurring_span_records([PASSAGE], n=1, seed=0)
    assert len(records) == 1
    rec = records[0]
    check(rec, PASSAGE)
    assert rec.answer_text == "1843"                  # the only span in exactly two sentences
    assert "what year" in rec.question
    asked = rec.question[:-1].replace("what year", "1843") + "."
    assert asked in PASSAGE and asked not in rec.context   # its sentence was taken out of the context


def test_nothing_recurs_gives_no_question():
    assert recurring_span_records(["Paris is large. Rome is old. Madrid is sunny."], n=5) == []


@pytest.mark.skipif(not WIKI.exists(), reason="needs ../shared/data/wiki")
def test_wikipedia_leads():
    wiki = json.loads(WIKI.read_text())
    entries = wiki.values() if isinstance(wiki, dict) else wiki
    texts = [w["extract"] for w in list(entries)[:300] if len(w.get("extract", "")) > 200]
    found = 0
    for k, text in enumerate(texts):
        for rec in recurring_span_records([text], n=1, seed=k):
            check(rec, text)
            found += 1
    assert found >= 20
