"""The no-answer verdict, span scores that share one softmax with the no-answer slot, hidden
zero-probability alternatives, and spans that never cross into an image's OCR text."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _tiny_reader import build_tiny_checkpoint

from longread import Reader
from longread.decoding import best_spans, null_probability
from longread.errors import InvalidOptionError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_na"))


def load(tiny_dir, **options) -> Reader:
    reader = Reader.from_pretrained(tiny_dir, device="cpu", dtype=torch.float32, **options)
    reader.progress = False
    return reader


TEXT = "Alpha beta gamma delta. The harbour opened in 1871. Epsilon zeta eta theta."


def planted(reader, doc, answer: str, strength: float, null: float):
    """Replace the model's logits: ``answer``'s first/last tokens get ``strength``, the null slot ``null``."""
    prepared = reader.prepare(doc)
    offs = prepared.tokens.offsets
    a = TEXT.find(answer)
    s = int(np.searchsorted(offs[:, 1], a, side="right"))
    e = int(np.searchsorted(offs[:, 0], a + len(answer), side="left")) - 1
    n = prepared.num_tokens
    start, end = torch.zeros(n), torch.zeros(n)
    start[s], end[e] = strength, strength
    reader.read = lambda *_: (torch.arange(n), start, end, torch.tensor([null, null]),
                              torch.zeros(n, dtype=torch.long))
    return start, end


def test_null_probability_and_span_scores_share_one_softmax():
    g = torch.Generator().manual_seed(0)
    s, e = torch.randn(40, generator=g) * 3, torch.randn(40, generator=g) * 3
    null = (1.5, -0.5)
    spans = best_spans(s, e, top_k=3, temperature=2.0, null_logits=null)
    ps = torch.softmax(torch.cat([torch.tensor([null[0]]), s]) / 2.0, 0)
    pe = torch.softmax(torch.cat([torch.tensor([null[1]]), e]) / 2.0, 0)
    for sp in spans:
        assert math.isclose(sp.score, float(ps[1 + sp.start] * pe[1 + sp.end]), rel_tol=1e-5)
    assert math.isclose(null_probability(s, e, null, 2.0), float(ps[0] * pe[0]), rel_tol=1e-5)


def test_segments_keep_spans_inside_one_segment():
    s, e = torch.full((12,), -5.0), torch.full((12,), -5.0)
    s[3], e[7] = 5.0, 5.0                      # the best span 3..7 crosses from segment 0 into 1
    seg = torch.tensor([0] * 5 + [1] * 7)
    spans = best_spans(s, e, top_k=5, segments=seg)
    assert all(seg[sp.start] == seg[sp.end] for sp in spans)
    assert (best_spans(s, e, top_k=1)[0].start, best_spans(s, e, top_k=1)[0].end) == (3, 7)


def test_verdict_follows_the_fitted_threshold(tiny_dir):
    reader = load(tiny_dir, no_answer=True, no_answer_threshold=0.0, retrieval_weight=0.0, mbr_temperature=0.0)
    planted(reader, TEXT, "1871", strength=8.0, null=2.0)
    ans = reader.answer(TEXT, "When did the harbour open?")
    assert ans.text == "1871" and not ans.no_answer
    assert ans.no_answer_score is not None and ans.no_answer_score + ans.score <= 1.0
    planted(reader, TEXT, "1871", strength=8.0, null=12.0)
    ans = reader.answer(TEXT, "Who built the bridge?")
    assert ans.no_answer and ans.text == "1871"            # the verdict, still with the best guess
    assert ans.no_answer_score > ans.score
    assert not reader.answer(TEXT, "Who built the bridge?", allow_no_answer=False).no_answer
    reader.config.no_answer_threshold = 20.0                 # a stricter threshold answers anyway
    assert not reader.answer(TEXT, "Who built the bridge?").no_answer


def test_readers_without_a_no_answer_slot_never_abstain(tiny_dir):
    reader = load(tiny_dir, retrieval_weight=0.0)
    planted(reader, TEXT, "1871", strength=8.0, null=50.0)
    ans = reader.answer(TEXT, "When?")
    assert not ans.no_answer and ans.no_answer_score is None and ans.text == "1871"


def test_alternatives_without_probability_are_not_shown(tiny_dir):
    reader = load(tiny_dir, retrieval_weight=0.0, mbr_temperature=0.0)
    planted(reader, TEXT, "1871", strength=30.0, null=0.0)
    ans = reader.answer(TEXT, "When?", top_k=5)
    assert ans.text == "1871" and ans.alternatives == []
    reader.config.min_alternative_score = 0.0
    assert len(reader.answer(TEXT, "When?", top_k=5).alternatives) == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_counts_are_typed_errors(tiny_dir, bad):
    reader = load(tiny_dir)
    with pytest.raises(InvalidOptionError, match="top_k"):
        reader.answer(TEXT, "When?", top_k=bad)
    with pytest.raises(InvalidOptionError, match="max_answer_tokens"):
        reader.answer(TEXT, "When?", max_answer_tokens=bad)


def test_null_logits_are_the_question_cls_position(tiny_dir):
    """question_logits' no-answer slot equals the packed forward's logits at position 0."""
    reader = load(tiny_dir)
    prepared = reader.prepare(TEXT)
    start, end, null = reader.question_logits(prepared, "When did the harbour open?")
    from longread.layout import question_inputs
    q = question_inputs("When did the harbour open?", reader.tokenizer, reader.config.layout)
    d = prepared.inputs
    out = reader.model(torch.cat([q.input_ids, d.input_ids], 1), torch.cat([q.position_ids, d.position_ids], 1),
                       torch.cat([q.token_type_ids, d.token_type_ids], 1), q.input_ids.shape[1],
                       chunk_ids=d.chunk_ids, num_chunks=d.num_chunks)
    torch.testing.assert_close(null, torch.stack([out.start_logits[0, 0], out.end_logits[0, 0]]).float(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(start, out.start_logits[0, q.input_ids.shape[1]:], rtol=1e-4, atol=1e-5)


def test_expected_calibration_error_by_hand():
    from longread.training.fit_no_answer import ece

    conf = np.array([0.05, 0.15, 0.95, 0.92, 0.55])
    right = np.array([False, True, True, False, True])
    err, table = ece(conf, right, bins=10)
    # bins: [0,.1): 0.05 vs 0; [.1,.2): 0.15 vs 1; [.5,.6): 0.55 vs 1; [.9,1]: 0.935 vs 0.5
    by_hand = (abs(0.05 - 0) + abs(0.15 - 1) + abs(0.55 - 1) + 2 * abs(0.935 - 0.5)) / 5
    assert math.isclose(err, by_hand, rel_tol=1e-9)
    assert [n for _, _, n in table] == [1, 1, 1, 2]


def test_roc_auc_is_the_pairwise_win_rate():
    from longread.metrics import roc_auc

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)              # rounded: many ties
    positive = rng.random(60) < 0.4
    pos, neg = scores[positive], scores[~positive]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert math.isclose(roc_auc(scores, positive), pairwise, rel_tol=1e-12)
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert roc_auc([1.0, 1.0], [True, False]) == 0.5
    assert math.isnan(roc_auc([1.0, 2.0], [True, True]))


def test_threshold_verdicts_by_hand():
    """decide: abstain when log P(null) - log P(span) > threshold; an abstention scores 1 on an
    unanswerable question and its confidence is P(null)."""
    from longread.training.fit_no_answer import decide

    answer_f1 = np.array([1.0, 0.4, 0.0])
    p_span, p_null = np.array([0.6, 0.2, 0.1]), np.array([0.3, 0.5, 0.8])
    abstain_f1 = np.array([0.0, 0.0, 1.0])            # the third question is unanswerable
    out = (answer_f1, p_span, p_null, abstain_f1)
    f1, conf, right = decide(out, 0.0)                # log ratios: -0.69, 0.92, 2.08
    assert f1.tolist() == [1.0, 0.0, 1.0] and conf.tolist() == [0.6, 0.5, 0.8] and right.tolist() == [1, 0, 1]
    f1, conf, _ = decide(out, 1.0)                    # only the third abstains
    assert f1.tolist() == [1.0, 0.4, 1.0] and conf.tolist() == [0.6, 0.2, 0.8]
    f1, _, _ = decide(out, -1e9)                      # always abstains
    assert f1.tolist() == abstain_f1.tolist()
