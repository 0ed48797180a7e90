"""The ``longread`` command line (in process, on a tiny local checkpoint) and progress bars.

Exit codes: 0 answered, 2 bad command line, 3 bad input, 4 device/model, 5 output not written;
every answer printed slices the document exactly."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from _tiny_reader import build_tiny_checkpoint

from longread import Reader
from longread.cli import main
from longread.progress import layer_progress, progress, progress_enabled

TEXT = ("Galileo Galilei was born in Pisa in 1564. He studied the motion of pendulums.\n\n"
        "Marie Curie was born in Warsaw. She discovered polonium and radium.\n") * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return str(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:                  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_json_answers_are_exact(capsys, tiny, doc, tmp_path):
    questions = tmp_path / "questions.txt"
    questions.write_text("Who discovered radium?\n\n  Where was Curie born?  \n", encoding="utf-8")
    code, out, err = run(capsys, "ask", doc, "-q", "Where was Galileo born?", "--questions", questions,
                         "--model", tiny, "--device", "cpu", "--json", "--top-k", 2, "--quiet")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in rows] == ["Where was Galileo born?", "Who discovered radium?",
                                             "Where was Curie born?"]
    for r in rows:
        assert len(r["alternatives"]) <= 1                  # only alternatives with a probability
        assert all(a["score"] >= 1e-3 for a in r["alternatives"])
        for a in [r] + r["alternatives"]:
            assert TEXT[a["start"]:a["end"]] == a["text"] and a["page"] == 1


def test_questions_from_stdin(capsys, monkeypatch, tiny, doc):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who discovered polonium?\n\nWhere was Curie born?\n"))
    code, out, err = run(capsys, "ask", doc, "--questions", "-", "--model", tiny, "--device", "cpu", "--json")
    assert code == 0, err
    assert [json.loads(line)["question"] for line in out.splitlines()] == ["Who discovered polonium?",
                                                                           "Where was Curie born?"]


def test_text_output_shows_location_and_context(capsys, tiny, doc):
    code, out, _ = run(capsys, "ask", doc, "-q", "Where was Galileo born?", "--model", tiny, "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    reader = Reader.from_pretrained(tiny, device="cpu", dtype=torch.float32)
    best = reader.answer(doc, "Where was Galileo born?", top_k=3)
    assert lines[0] == "Q: Where was Galileo born?" and len(lines) == 1 + 2 * (1 + len(best.alternatives))
    assert lines[1].startswith(f"  1. {best.text!r}  (score ") and f"chars {best.start}-{best.end}" in lines[1]
    flat = " ".join(best.text.split())
    shown = lines[2].strip()[3:-3].split(f"[{flat}]")               # "...before[answer]after..."
    assert " ".join(shown[0].split()) in " ".join(TEXT[:best.start].split())
    assert " ".join(shown[1].split()) in " ".join(TEXT[best.end:].split())


def test_html_evidence_page(capsys, tiny, doc, tmp_path):
    out_html = tmp_path / "ev.html"
    code, _, err = run(capsys, "ask", doc, "-q", "Where was Galileo born?", "-q", "Who discovered radium?",
                       "--model", tiny, "--device", "cpu", "--html", out_html)
    assert code == 0 and str(out_html) in err
    page = out_html.read_text(encoding="utf-8")
    assert page.count('class="strip"') == 2 and page.count('<h2>') == 2 and page.startswith("<!DOCTYPE html>")
    code, _, err = run(capsys, "ask", doc, "-q", "Who?", "--model", tiny, "--device", "cpu",
                       "--html", tmp_path / "missing_dir" / "ev.html")
    assert code == 5 and "cannot write" in err


def test_pdf_with_password(capsys, tiny, tmp_path):
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    for text in ("Galileo was born in Pisa.", "Curie was born in Warsaw."):
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.set_encryption(owner_password="o", user_password="secret", encryption_method=fpdf.enums.EncryptionMethod.RC4)
    path = tmp_path / "locked.pdf"
    path.write_bytes(bytes(pdf.output()))
    common = ["--model", tiny, "--device", "cpu", "--json", "-q", "Where was Curie born?"]
    code, _, err = run(capsys, "ask", path, *common)
    assert code == 3 and "--password" in err
    code, out, err = run(capsys, "ask", path, *common, "--password", "secret")
    assert code == 0, err
    from longread.formats import load_pdf

    document = load_pdf(path, password="secret")
    best = json.loads(out)
    assert document.text[best["start"]:best["end"]] == best["text"]
    assert best["page"] == (2 if best["start"] >= document.page_starts[1] else 1)


@pytest.mark.parametrize("argv, code, words", [
    (["ask", "{missing}", "-q", "Who?"], 3, "not found"),
    (["ask", "{empty}", "-q", "Who?"], 3, "empty"),
    (["ask", "{doc}", "-q", "   "], 3, "question is empty"),
    (["ask", "{doc}", "-q", "why " * 200], 3, "at most"),
    (["ask", "{doc}"], 2, "no question"),
    (["ask", "{doc}", "-q", "Who?", "--top-k", "0"], 2, "at least 1"),
    (["ask", "{doc}", "--questions", "{missing}"], 2, "cannot read the questions file"),
    (["ask", "{doc}", "-q", "Who?", "--device", "gpu0"], 2, "not a device"),
    (["ask"], 2, "required"),
    ([], 2, "required"),
    (["ask", "{doc}", "-q", "Who?", "--model", "{tmp}"], 4, ""),
    (["ask", "{doc}", "-q", "Who?", "--fusion", "{missing}"], 4, "fusion weights"),
])
def test_exit_codes(capsys, tiny, doc, tmp_path, argv, code, words):
    empty = tmp_path / "empty.md"
    empty.write_text(" \n\t ", encoding="utf-8")
    names = dict(missing=tmp_path / "nope.txt", empty=empty, doc=doc, tmp=tmp_path)
    argv = [a.format(**names) for a in argv]
    if "--model" not in argv and argv:
        argv += ["--model", tiny] + ([] if "--device" in argv else ["--device", "cpu"])
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert words in err and (code == 2 or err.startswith("longread: "))


def test_cuda_requested_but_absent(capsys, tiny, doc):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, "ask", doc, "-q", "Who?", "--model", tiny, "--device", "cuda")
    assert code == 4 and "device='cpu'" in err


def test_help_lists_exit_codes(capsys):
    code, out, _ = run(capsys, "ask", "--help")
    assert code == 0 and "exit codes:" in out
    for n in ("0", "2", "3", "4", "5"):
        assert f"\n  {n}  " in out
    for option in ("--questions", "--html", "--quiet", "--no-progress", "--top-k", "--device", "--json"):
        assert option in out


def test_console_script(tmp_path):
    exe = shutil.which("longread", path=os.path.dirname(sys.executable)) or shutil.which("longread")
    if exe is None:
        pytest.skip("the longread console script is not installed (pip install -e .)")
    done = subprocess.run([exe, "ask", str(tmp_path / "missing.pdf"), "-q", "Who?", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "not found" in done.stderr and done.stdout == ""


# --------------------------------------------------------------------------------- progress

def test_progress_is_silent_unless_asked(monkeypatch):
    monkeypatch.delenv("LONGREAD_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())              # not a terminal
    assert not progress_enabled() and progress_enabled(True) and not progress_enabled(False)
    list(progress(range(3), desc="x", delay=0))
    assert sys.stderr.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress_enabled()
    list(progress(range(3), desc="counting", delay=0))
    assert "counting" in sys.stderr.getvalue()
    monkeypatch.setenv("LONGREAD_PROGRESS", "0")
    assert not progress_enabled() and progress_enabled(True)


def test_layer_progress_counts_tokens_through_layers(tiny, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    reader = Reader.from_pretrained(tiny, device="cpu", dtype=torch.float32)
    layers = reader.model.layers
    x = torch.randn(1, 37, reader.model.config.hidden_size)
    with torch.no_grad():
        plain = reader.model.run_layers(x, 0, len(layers), 0)
        with layer_progress(layers, tokens=37, desc="encoding", enabled=True) as bar:
            watched = reader.model.run_layers(x, 0, len(layers), 0)
            assert bar.n == bar.total == 37 * len(layers)
    torch.testing.assert_close(watched, plain, rtol=0, atol=0)              # the bar changes nothing
    assert all(not layer._forward_hooks for layer in layers)          # hooks removed
    with layer_progress(layers, tokens=37, desc="encoding", enabled=False) as bar:
        assert bar is None


def test_quiet_turns_every_bar_off(capsys, monkeypatch, doc):
    import longread.cli as cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    seen = []
    monkeypatch.delenv("LONGREAD_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setattr(cli, "_ask", lambda args, questions: seen.append(progress_enabled()) or 0)
    assert main(["ask", str(doc), "-q", "Who?"]) == 0 and main(["ask", str(doc), "-q", "Who?", "--quiet"]) == 0
    assert main(["ask", str(doc), "-q", "Who?", "--no-progress"]) == 0
    assert seen == [True, False, False] and progress_enabled()          # restored afterwards


def test_document_too_large_for_memory(capsys, monkeypatch, tiny, doc):
    import longread.reader

    monkeypatch.setattr(longread.reader, "available_memory", lambda: 1024)
    code, _, err = run(capsys, "ask", doc, "-q", "Who?", "--model", tiny, "--device", "cpu")
    assert code == 4 and "GiB" in err and "split the document" in err


def test_inputs_are_not_modified(capsys, tiny, tmp_path):
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Galileo was born in Pisa.")
    path = tmp_path / "doc.pdf"
    path.write_bytes(bytes(pdf.output()))
    questions = tmp_path / "q.txt"
    questions.write_text("Where was Galileo born?\n", encoding="utf-8")
    before = (path.read_bytes(), questions.read_bytes(), os.stat(path).st_mtime_ns)
    code, out, _ = run(capsys, "ask", path, "--questions", questions, "--model", tiny, "--device", "cpu", "--json")
    assert code == 0 and json.loads(out)["page"] == 1
    assert (path.read_bytes(), questions.read_bytes(), os.stat(path).st_mtime_ns) == before
