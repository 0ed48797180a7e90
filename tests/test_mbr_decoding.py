"""Minimum-Bayes-risk span choice (``mbr_temperature``): checked against a brute-force search
written independently of ``longread.decoding``."""
import itertools
import math

import pytest
import torch

from longread.decoding import best_spans, expected_f1
from longread.reader import ReaderConfig


def token_f1(a, b):
    overlap = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return 2 * overlap / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1))


def brute_force_mbr(s, e, max_answer_tokens, temperature, mbr_temperature, pool_size):
    """All valid spans by log P(span); the pool's best by expected F1 (pure Python)."""
    ls = torch.log_softmax(s.double() / temperature, 0).tolist()
    le = torch.log_softmax(e.double() / temperature, 0).tolist()
    spans = [(i, j, ls[i] + le[j]) for i in range(len(ls)) for j in range(i, min(len(ls), i + max_answer_tokens))]
    pool = sorted(spans, key=lambda t: -t[2])[:pool_size]
    top = max(c for _, _, c in pool)
    w = [math.exp((c - top) / mbr_temperature) for _, _, c in pool]
    z = sum(w)
    gain = [sum(wk / z * token_f1(p[:2], q[:2]) for q, wk in zip(pool, w)) for p in pool]
    best = max(range(len(pool)), key=lambda k: gain[k])
    return pool[best], gain[best]


def test_expected_f1_matches_definition():
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 40, (25,), generator=g)
    pairs = torch.stack([starts, starts + torch.randint(0, 8, (25,), generator=g)], 1)
    logs = torch.randn(25, generator=g, dtype=torch.float64) * 2
    got = expected_f1(pairs, logs, 0.7)
    p = torch.softmax(logs / 0.7, 0).tolist()
    for k, a in enumerate(pairs.tolist()):
        want = sum(pk * token_f1(a, b) for pk, b in zip(p, pairs.tolist()))
        assert float(got[k]) == pytest.approx(want, rel=1e-9)


CASES = list(itertools.product(range(4), (12, 40), (4, 9), (0.5, 2.0), (8, 30)))


@pytest.mark.parametrize("seed, n, width, t, m", CASES)
def test_mbr_choice_is_the_brute_force_choice(seed, n, width, t, m):
    g = torch.Generator().manual_seed(seed)
    s, e = torch.randn(n, generator=g) * 1.5, torch.randn(n, generator=g) * 1.5
    spans = best_spans(s, e, top_k=3, max_answer_tokens=width, temperature=1.3, candidates=n,
                       mbr_temperature=t, mbr_candidates=m)
    (bs, be, log_p), _ = brute_force_mbr(s, e, width, 1.3, t, m)
    assert (spans[0].start, spans[0].end) == (bs, be)
    assert spans[0].score == pytest.approx(math.exp(log_p), rel=1e-4)     # the score stays P(span)
    for i, x in enumerate(spans):                                          # alternatives still distinct places
        for y in spans[i + 1:]:
            assert x.end < y.start or y.end < x.start


def test_uncertain_end_gives_a_covering_span_and_a_sure_span_is_kept():
    n = 60
    s, e = torch.full((n,), -10.0), torch.full((n,), -10.0)
    s[20] = 10.0                                            # the start is certain
    e[22], e[27], e[31] = 8.0, 7.8, 7.8                     # the end is not
    plain = best_spans(s, e, top_k=1)[0]
    mbr = best_spans(s, e, top_k=1, mbr_temperature=1.0)[0]
    assert (plain.start, plain.end) == (20, 22)
    assert mbr.start == 20 and mbr.end == 27                # covers the likely region
    assert mbr.score < plain.score
    e[22] = 16.0                                            # now the end is certain too
    assert (best_spans(s, e, top_k=1, mbr_temperature=1.0)[0].start,
            best_spans(s, e, top_k=1, mbr_temperature=1.0)[0].end) == (20, 22)


def test_mbr_off_is_the_most_probable_span():
    g = torch.Generator().manual_seed(7)
    s, e = torch.randn(500, generator=g) * 2, torch.randn(500, generator=g) * 2
    a = best_spans(s, e, top_k=5, mbr_temperature=0.0)
    b = best_spans(s, e, top_k=5)
    assert [(x.start, x.end, x.score) for x in a] == [(x.start, x.end, x.score) for x in b]
    assert a[0].score == max(x.score for x in a)


@pytest.mark.parametrize("bad", [dict(mbr_temperature=-0.1), dict(mbr_candidates=0), dict(top_k=0),
                                 dict(temperature=0.0), dict(max_answer_tokens=0), dict(retrieval_weight=-1.0)])
def test_reader_config_rejects_bad_decoding_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ReaderConfig(**bad)
