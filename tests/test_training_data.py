"""Loading labelled questions for training: SQuAD JSON (with COVID-QA's misaligned offsets),
flat JSON-lines, and hub datasets in SQuAD's schema (the hub call is replaced by a local
``datasets.Dataset``: nothing is downloaded)."""
import json

import datasets
import pytest

from longread.training.data import load_squad_records, locate_answer

CTX = "The virus spreads by droplets. Masks reduce spread. The virus spreads by contact too."


def test_locate_answer_prefers_the_occurrence_nearest_the_hint():
    first, second = CTX.find("The virus spreads"), CTX.rfind("The virus spreads")
    assert locate_answer(CTX, "The virus spreads", second - 3) == second
    assert locate_answer(CTX, "The virus spreads", 2) == first
    assert locate_answer(CTX, "Masks", CTX.find("Masks")) == CTX.find("Masks")
    assert locate_answer(CTX, "vaccines", 0) is None


def test_squad_json_with_wrong_offsets(tmp_path):
    data = {"data": [{"title": "t", "paragraphs": [{"context": CTX, "qas": [
        {"id": "a", "question": "What reduces spread?", "answers": [{"text": "Masks", "answer_start": 3}]},
        {"id": "b", "question": "Unanswerable?", "answers": []},
        {"id": "c", "question": "Missing?", "answers": [{"text": "vaccines", "answer_start": 0}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data))
    records = load_squad_records(str(path))
    assert [r.id for r in records] == ["a"]
    r = records[0]
    assert r.context[r.answer_start:r.answer_start + len(r.answer_text)] == "Masks"
    assert r.article == "t"


ROWS = [{"id": "q1", "title": "T", "context": CTX, "question": "How does it spread?",
         "answers": {"text": ["by contact"], "answer_start": [CTX.find("by contact")]}},
        {"id": "q2", "title": "T", "context": CTX, "question": "Impossible?",
         "answers": {"text": [], "answer_start": []}}]


def check_rows(records):
    assert [r.id for r in records] == ["q1"]
    r = records[0]
    assert r.context[r.answer_start:r.answer_start + len(r.answer_text)] == "by contact"


def test_flat_jsonl(tmp_path):
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    check_rows(load_squad_records(str(path)))


def test_hub_name_in_squad_schema(monkeypatch):
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    check_rows(load_squad_records("rajpurkar/squad_v2", split="validation"))
    assert calls == [("rajpurkar/squad_v2", "validation")]


def test_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SQuAD JSON"):
        load_squad_records(str(tmp_path / "nothing.json"))
