"""Evidence view and chunk attention.

* chunk attention: the weights come from the attention the model really computed (a dense
  softmax rebuilt from the layer's weights reproduces the layer's own attention output for the
  question rows), summed per chunk, with the online-softmax key blocks forced small;
* the page: highlights slice the document exactly (``data-start``/``data-end``), the text is
  escaped, nothing external is loaded; fuzzed on arbitrary Unicode documents;
* the page renders in headless Chromium (skipped where no Chromium binary is installed).
"""
from __future__ import annotations

import io
import math
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import chromium
from _tiny_reader import build_tiny_checkpoint

import longread.chunk_attention as chunk_attention
from longread import Document, Reader
from longread.chunk_attention import ChunkAttention, answer_with_attention
from longread.evidence import chunk_char_ranges, evidence_html, write_evidence_html

bs4 = pytest.importorskip("bs4")

TEXT = ("Galileo was born in Pisa. " * 6 + "\n\n<script>alert('x')</script> & <b>not bold</b> \"quoted\". "
        + "The telescope showed four moons of Jupiter. " * 6 + "Ünïcödé 東京 😀 text ends here.")


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    torch.set_num_threads(1)
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    r = Reader.from_pretrained(path, device="cpu", dtype=torch.float32, top_k=4, summary_tokens=True, chunk_size=24,
                               min_alternative_score=0.0)       # every alternative: the page shows them all
    with torch.no_grad():
        r.model.summaries.chunk_proj.weight.normal_(0.0, 0.1)
    return r


def test_chunk_attention_is_the_models_attention(reader, monkeypatch):
    monkeypatch.setattr(chunk_attention, "KEY_BLOCK", 7)          # many online-softmax blocks
    prepared = reader.prepare(TEXT)
    attn = reader.model.layers[-1].attn
    seen = {}
    h1 = attn.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    h2 = attn.out.register_forward_pre_hook(lambda m, args: seen.__setitem__("y", args[0].detach().clone()))
    try:
        ans, weights = answer_with_attention(reader, prepared, "Where was Galileo born?")
    finally:
        h1.remove()
        h2.remove()
    x, y = seen["x"][0], seen["y"][0]                               # (L, hidden) each
    c, n = prepared.tokens.num_chunks, prepared.num_tokens
    lq = x.shape[0] - c - n
    heads, dim = attn.n_head, x.shape[1] // attn.n_head
    split = lambda t: t.view(-1, heads, dim).transpose(0, 1)       # noqa: E731
    with torch.inference_mode():
        q, k, v = split(attn.q(x)), split(attn.k(x)), split(attn.v(x))
        probs = torch.softmax(q[:, :lq] @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)   # (H, lq, L)
    # the dense probabilities reproduce what the layer computed for the question rows
    torch.testing.assert_close((probs @ v).transpose(0, 1).reshape(lq, -1), y[:lq], atol=1e-5, rtol=1e-4)
    key_chunk = np.concatenate([np.full(lq, -1), np.arange(c), prepared.inputs.token_chunk])
    mean = probs.mean(dim=(0, 1)).double().numpy()
    expected = np.array([mean[key_chunk == i].sum() for i in range(c)])
    assert weights.shape == (c,) and c >= 4
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
    assert 0 < weights.sum() < 1 and np.isclose(weights.sum() + mean[:lq].sum(), 1.0)
    assert ans.text == TEXT[ans.start:ans.end]


@pytest.mark.parametrize("global_projections", [False, True])
def test_question_attention_by_chunk_on_one_layer(global_projections, monkeypatch):
    """Longformer-style separate global projections and padded keys, against the layer itself."""
    from _helpers import randomize_
    from longread.model import EncoderConfig, SelfAttention

    monkeypatch.setattr(chunk_attention, "KEY_BLOCK", 16)
    cfg = EncoderConfig(hidden_size=64, num_attention_heads=4, global_projections=global_projections,
                        attention_window=(4, 4), hidden_dropout_prob=0.0)
    attn = SelfAttention(cfg).eval()
    randomize_(attn, std=0.3)
    lq, n = 5, 45
    x = torch.randn(1, n, 64)
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, -4:] = False
    seen = {}
    hook = attn.out.register_forward_pre_hook(lambda m, args: seen.__setitem__("y", args[0].detach().clone()))
    with torch.no_grad():
        attn(x, (4, 4), lq, mask, "torch")
        hook.remove()
        qp, kp, vp = (attn.q_global, attn.k_global, attn.v_global) if global_projections else (attn.q, attn.k, attn.v)
        split = lambda t: t.view(n, 4, 16).transpose(0, 1)          # noqa: E731
        q, k, v = split(qp(x[0])), split(kp(x[0])), split(vp(x[0]))
        scores = (q[:, :lq] @ k.transpose(1, 2) / math.sqrt(16)).masked_fill(~mask[0], -math.inf)
        probs = torch.softmax(scores, dim=-1)                         # (H, lq, n)
    torch.testing.assert_close((probs @ v).transpose(0, 1).reshape(lq, -1), seen["y"][0, :lq], atol=1e-5, rtol=1e-4)
    key_chunk = torch.cat([torch.full((lq,), -1), torch.arange(n - lq) // 10])
    weights = chunk_attention.question_attention_by_chunk(attn, x[0], lq, key_chunk, 4, mask[0])
    mean = probs.mean(dim=(0, 1)).double().numpy()
    np.testing.assert_allclose(weights, [mean[key_chunk.numpy() == c].sum() for c in range(4)], rtol=1e-5, atol=1e-8)


def test_no_read_recorded_gives_none(reader):
    prepared = reader.prepare(TEXT)
    with ChunkAttention(reader.model, prepared) as recorder:
        reader.prepare(TEXT)
    assert recorder.weights() is None


def marks(page: str):
    # (bs4 would otherwise turn whitespace-only strings into one space; browsers keep them in pre-wrap)
    soup = bs4.BeautifulSoup(page, "html.parser", preserve_whitespace_tags={"div", "mark", "li", "p", "span"})
    return soup, soup.find_all("mark", attrs={"data-start": True})


def check_page(page: str, text: str, answers, num_chunks: int):
    """Every highlight slices ``text`` at its data offsets; passages are the answers' contexts
    (NUL, which HTML cannot carry, shows as U+FFFD)."""
    soup, found = marks(page)
    shown = text.replace("\x00", "\ufffd")
    everything = [a for ans in answers for a in [ans] + ans.alternatives]
    assert len(found) == len(everything)
    for mark, a in zip(found, everything):
        start, end = int(mark["data-start"]), int(mark["data-end"])
        assert (start, end) == (a.start, a.end) and text[start:end] == a.text
        assert mark.get_text() == shown[start:end]
        passage = mark.find_parent("div", class_="passage")
        p0, p1 = int(passage["data-start"]), int(passage["data-end"])
        assert text[p0:p1] == a.context
        assert passage.get_text()[1 if p0 else 0:] in (shown[p0:p1], shown[p0:p1] + "…")
    assert soup.find("script") is None and soup.find("link") is None
    assert not soup.find_all(src=True) and not soup.find_all(href=True)
    for strip in soup.find_all("div", class_="strip"):
        assert len(strip.find_all("span", class_="cell")) == num_chunks
    return soup


def test_evidence_page(reader, tmp_path):
    prepared = reader.prepare(TEXT)
    questions = ["Where was Galileo born?", "What did the telescope show?"]
    results = [answer_with_attention(reader, prepared, q) for q in questions]
    answers, weights = [r[0] for r in results], [r[1] for r in results]
    path = write_evidence_html(answers, prepared, tmp_path / "ev.html", chunk_weights=weights)
    page = path.read_text(encoding="utf-8")
    soup = check_page(page, TEXT, answers, prepared.tokens.num_chunks)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert [h.get_text() for h in soup.find_all("h2")] == [f"Q{i + 1}: {q}" for i, q in enumerate(questions)]
    for strip, ans, w in zip(soup.find_all("div", class_="strip"), answers, weights):
        cells = strip.find_all("span", class_="cell")
        np.testing.assert_allclose([float(c["data-weight"]) for c in cells], w, rtol=1e-5)
        assert [int(c["data-chunk"]) for c in cells if "has-answer" in c["class"]] == [ans.chunk]
    ranges = chunk_char_ranges(prepared)
    assert ranges[0][0] == prepared.tokens.offsets[0, 0] and ranges[-1][1] == prepared.tokens.offsets[-1, 1]
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    single = evidence_html(answers[0], prepared)                      # no weights: no strip
    assert "No attention weights" in single and 'class="strip"' not in single
    with pytest.raises(ValueError, match="one per answer"):
        evidence_html(answers, prepared, chunk_weights=weights[:1])
    with pytest.raises(ValueError, match="chunks"):
        evidence_html(answers[0], prepared, chunk_weights=np.ones(3))
    with pytest.raises(TypeError, match="Answer"):
        evidence_html("Pisa", prepared)
    with pytest.raises(TypeError, match="reader.prepare"):
        evidence_html(answers[0], TEXT)


DOC = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=150).filter(
    lambda t: any(ch.isalnum() for ch in t) and not t.strip().lower().endswith((".txt", ".md", ".markdown", ".text",
                                                                               ".pdf", ".html", ".htm", ".docx")))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(DOC)
def test_evidence_page_fuzz(reader, text):
    try:
        prepared = reader.prepare(Document(text=text))              # any string as text
    except Exception as exc:                                        # e.g. only control characters
        assert type(exc).__name__ == "EmptyDocumentError"
        return
    ans, w = answer_with_attention(reader, prepared, "What is it?")
    check_page(evidence_html(ans, prepared, chunk_weights=w), text, [ans], prepared.tokens.num_chunks)


def test_page_renders_in_headless_chromium(reader, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    browser = chromium()
    prepared = reader.prepare(TEXT)
    ans, w = answer_with_attention(reader, prepared, "Where was Galileo born?")
    page = write_evidence_html(ans, prepared, tmp_path / "ev.html", chunk_weights=w)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,1200", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    near = lambda rgb: (np.abs(pixels - np.array(rgb)).sum(-1) <= 12).sum()   # noqa: E731
    assert near((0xff, 0xd4, 0x00)) > 200              # the answer's highlight
    assert near((0x9f, 0xd3, 0xff)) > 50               # an alternative's highlight
    assert near((200, 30, 30)) > 100                   # the most attended chunk's cell, full strength
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50        # not a blank page
    Image.open(io.BytesIO(shot.read_bytes())).verify()
