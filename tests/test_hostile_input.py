"""Careless and hostile input at the public API, the command line and batch answering: every case
ends in an exact answer or a typed ``LongreadError`` (never another exception, never a hang), and
a batch accounts for every document it was given.

The fuzz tests (hypothesis, bounded) state the property over generated documents, questions,
options and files; the named tests pin the cases that once failed."""
from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _tiny_reader import build_tiny_checkpoint

from longread import Document, Reader, batch
from longread.chunk_attention import answer_with_attention
from longread.cli import main as cli_main
from longread.document import load_document
from longread.errors import DocumentReadError, LongreadError

TEXT = ("Galileo Galilei was born in Pisa in 1564. He improved the telescope and observed the moons of "
        "Jupiter. Marie Curie was born in Warsaw and discovered polonium and radium.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_hostile"))


@pytest.fixture(scope="module")
def reader(tiny):
    r = Reader.from_pretrained(tiny, device="cpu", dtype=torch.float32, top_k=3)
    r.progress = False
    return r


def exact(ans, text: str) -> None:
    for a in [ans] + ans.alternatives:
        assert text[a.start:a.end] == a.text and a.text


# ------------------------------------------------------------------ what a string means

def test_strings_that_name_files_are_read_as_files_or_refused(tmp_path):
    (tmp_path / "notes.xyz").write_text("some notes")
    (tmp_path / "doc.txt").write_text(TEXT)
    for name, match in [(tmp_path / "notes.xyz", "unsupported document format"), (tmp_path, "is a directory"),
                        (tmp_path / "gone.txt", "not found"), ("/dev/zero", "not a regular file"),
                        ("I read the manual.txt", "not found"), ("./missing-notes", "not found")]:
        with pytest.raises(DocumentReadError, match=match):
            load_document(str(name))
    assert load_document(str(tmp_path / "doc.txt")).text == TEXT
    assert load_document("I read the manual.txt yesterday.").text == "I read the manual.txt yesterday."
    assert load_document(Document(text="I read the manual.txt")).text == "I read the manual.txt"


def test_devices_fifos_and_links_to_them_are_never_read(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    link = tmp_path / "zero.txt"
    link.symlink_to("/dev/zero")
    for path in (fifo, link, Path("/dev/zero")):
        t0 = time.monotonic()
        with pytest.raises(DocumentReadError, match="not a regular file"):
            load_document(path)
        assert time.monotonic() - t0 < 5


# ------------------------------------------------------------------ text the tokenizer dislikes

def test_lone_surrogates_in_document_and_question(reader):
    text = "The gate \ud800 opened in 1871. " + TEXT
    exact(reader.answer(text, "When did the gate \udfff open?"), text)


def test_a_huge_word_of_mixed_scripts_tokenizes_quickly(reader):
    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("abcxyzабвгдαβγδ日本語中文한국어अआइ"), 200_000))
    text = TEXT + " " + word + " The end."
    t0 = time.monotonic()
    prepared = reader.prepare(text)
    assert time.monotonic() - t0 < 20
    offs = prepared.tokens.offsets
    assert (np.diff(offs[:, 0]) >= 0).all() and (offs[:, 1] >= offs[:, 0]).all() and offs[-1, 1] == len(text)


# ------------------------------------------------------------------ fuzz: the public API

unicode_text = st.text(st.characters(codec=None, exclude_categories=()), min_size=0, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(unicode_text, st.lists(unicode_text, max_size=4)), question=unicode_text,
       top_k=st.one_of(st.none(), st.integers(-3, 6)), max_tokens=st.one_of(st.none(), st.integers(-1, 40)))
def test_fuzz_answer_is_exact_or_a_typed_error(reader, doc, question, top_k, max_tokens):
    try:
        ans = reader.answer(doc, question, top_k=top_k, max_answer_tokens=max_tokens)
    except LongreadError:
        return
    text = load_document(doc).text
    exact(ans, text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".txt", ".md", ".pdf", ".html", ".htm", ".bin", ""]),
       header=st.sampled_from([b"", b"%PDF-1.4\n", b"<html><body><p>", b"\xef\xbb\xbf"]))
def test_fuzz_files_are_answered_exactly_or_refused(reader, tmp_path_factory, data, suffix, header):
    path = tmp_path_factory.mktemp("fuzz") / f"doc{suffix}"
    path.write_bytes(header + data)
    try:
        ans = reader.answer(path, "What is it?")
    except LongreadError:
        return
    exact(ans, reader.prepare(path).document.text)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_fuzz_images_are_read_or_refused(reader, data):
    try:
        ans = reader.answer(TEXT, "Where was Galileo born?", images=[data])
    except LongreadError:
        return
    exact(ans, reader.prepare(TEXT, images=[data]).document.text)


# ------------------------------------------------------------------ threads

def test_evidence_weights_from_two_threads_match_sequential_calls(reader):
    prepared = reader.prepare(TEXT * 6)
    questions = ["Where was Galileo born?", "What did Curie discover?"] * 4
    expected = {q: answer_with_attention(reader, prepared, q)[1] for q in set(questions)}
    got, errors = [], []

    def work(q):
        try:
            got.append((q, answer_with_attention(reader, prepared, q)[1]))
        except Exception as exc:          # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == len(questions)
    for q, w in got:
        np.testing.assert_allclose(w, expected[q], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ batch answering

def run_batch(tiny, src, out):
    return batch.main(["--input", str(src), "--output", str(out), "--model", str(tiny), "--device", "cpu"])


def test_one_bad_document_never_stops_a_batch(tiny, tmp_path, monkeypatch):
    (tmp_path / "folder.txt").mkdir()
    lines = [{"id": "surrogate", "text": "Bad \ud800 text. " + TEXT, "questions": ["Where was Galileo born?"]},
             {"id": "dir", "path": "folder.txt", "questions": ["What?"]},
             {"id": "boom", "text": "EXPLODE " + TEXT, "questions": ["Who?"]},
             {"id": "good", "text": TEXT, "questions": ["Where was Curie born?", ""]}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    real = Reader.prepare

    def prepare(self, doc, images=None):          # an unexpected failure inside one document
        if isinstance(doc, Document) and doc.text.startswith("EXPLODE"):
            raise RuntimeError("simulated failure")
        return real(self, doc, images)

    monkeypatch.setattr(Reader, "prepare", prepare)
    out = tmp_path / "out.jsonl"
    assert run_batch(tiny, src, out) == 0
    rows = {(r["doc_id"], r["question_id"]): r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert set(rows) == {("surrogate", "0"), ("dir", "0"), ("boom", "0"), ("good", "0"), ("good", "1")}
    assert rows[("dir", "0")]["error_type"] == "DocumentReadError"
    assert rows[("boom", "0")]["error_type"] == "RuntimeError"
    assert rows[("good", "1")]["error_type"] == "EmptyQuestionError"
    for key in [("surrogate", "0"), ("good", "0")]:
        r = rows[key]
        text = lines[0]["text"] if key[0] == "surrogate" else TEXT
        assert text[r["start"]:r["end"]] == r["answer"]


def test_batch_refuses_to_overwrite_its_input_or_foreign_output(tiny, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT, "questions": ["Who?"]}) + "\n", encoding="utf-8")
    before = src.read_bytes()
    assert run_batch(tiny, src, src) == 3 and src.read_bytes() == before
    foreign = tmp_path / "other.jsonl"
    foreign.write_text('{"name": "not an answer"}\n', encoding="utf-8")
    assert run_batch(tiny, src, foreign) == 3
    assert foreign.read_text(encoding="utf-8") == '{"name": "not an answer"}\n'
    assert "not an answer written by longread.batch" in capsys.readouterr().err


# ------------------------------------------------------------------ command line

@pytest.fixture
def doc_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("Title \x1b[31mred\x1b]0;owned\x07 and \u202eevil. " + TEXT + " Line\u2028separator.",
                    encoding="utf-8")
    return path


def test_cli_never_prints_terminal_control_sequences(capsys, tiny, doc_file):
    code = cli_main(["ask", str(doc_file), "-q", "Where was \x1b[2J Galileo born?", "--model", str(tiny),
                     "--device", "cpu", "--top-k", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b" in out


def test_cli_json_lines_escape_line_separators(capsys, tiny, doc_file):
    code = cli_main(["ask", str(doc_file), "-q", "What is the separator?", "--model", str(tiny), "--device", "cpu",
                     "--json", "--top-k", "5", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.split("\n")
    assert lines[-1] == "" and all(json.loads(line) for line in lines[:-1])
    assert "\u2028" not in out


def test_cli_unknown_device_is_a_usage_error(capsys, tiny, doc_file):
    with pytest.raises(SystemExit) as exc:
        cli_main(["ask", str(doc_file), "-q", "Who?", "--device", "meta"])
    assert exc.value.code == 2 and "not a device" in capsys.readouterr().err


def test_cli_closed_pipe_and_ascii_terminal(tiny, doc_file, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "longread.cli", "ask", str(doc_file), "-q", "Wo ist Galileo geboren? é",
           "--model", str(tiny), "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "\\xe9" in done.stdout
    pipe = subprocess.run(" ".join(f"'{c}'" for c in cmd) + " | head -c1", shell=True, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in pipe.stderr and "BrokenPipe" not in pipe.stderr


def test_cli_reads_questions_from_stdin_even_if_not_utf8(monkeypatch, capsys, tiny, doc_file):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Where was Galileo born?\n"), encoding="utf-8"))
    assert cli_main(["ask", str(doc_file), "--questions", "-", "--model", str(tiny), "--device", "cpu",
                     "--quiet"]) == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=unicode_text, top_k=st.sampled_from(["1", "3", "0", "-1", "x", "2.5", "99999"]),
       device=st.sampled_from(["cpu", "meta", "cuda:x", "", "CPU"]), as_json=st.booleans(),
       content=unicode_text)
def test_fuzz_cli_exits_with_a_code_never_a_traceback(capsys, tiny, tmp_path_factory, question, top_k, device,
                                                      as_json, content):
    path = tmp_path_factory.mktemp("cli") / "doc.txt"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    argv = ["ask", str(path), "-q", question, "--model", str(tiny), "--device", device, "--top-k", top_k, "--quiet"]
    try:
        code = cli_main(argv + (["--json"] if as_json else []))
    except SystemExit as exc:                       # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2, 3, 4), (code, err)
    assert "Traceback" not in err
    if code == 0 and as_json:
        for line in out.splitlines():
            json.loads(line)
