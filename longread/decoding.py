"""Best-span search over a whole document's start/end logits.

Scores are probabilities under one softmax over every document token (start and end, each
divided by the calibration temperature): spans from different chunks compete in the same
distribution, and a span's score is P(start) * P(end).

The answer is by default the most probable span. With ``mbr_temperature > 0`` it is the
minimum-Bayes-risk choice instead: among the ``mbr_candidates`` most probable spans, the one with
the highest expected token-overlap F1 against the others, each weighted by
``exp(log P(span) / mbr_temperature)``. When the reader is sure of a short span that span wins;
when its boundaries are uncertain, a span covering the likely region does (SQuAD F1, the metric
of extractive QA, rewards it in expectation).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F


@dataclass
class Span:
    start: int      # first token (document token index)
    end: int        # last token, inclusive
    score: float    # P(start) * P(end)


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, top_k: int = 5,
               max_answer_tokens: int = 30, temperature: float = 1.0, candidates: int = 32,
               mbr_temperature: float = 0.0, mbr_candidates: int = 64,
               segments: Optional[torch.Tensor] = None,
               null_logits: Optional[Tuple[float, float]] = None) -> List[Span]:
    """start_logits, end_logits: (n,) over document tokens. Returns up to top_k spans, best first,
    with ``0 <= end - start < max_answer_tokens``; a span overlapping a better one is skipped, so
    alternatives are distinct places. ``mbr_temperature``/``mbr_candidates``: see the module
    docstring (0: the most probable span first). ``segments`` (n,) int: a span's first and last
    token must lie in the same segment (segments are contiguous runs, e.g. the document text
    between two images' OCR blocks, and each block). ``null_logits`` (start, end): the
    no-answer slot's logits, which then share the softmax, so span scores and
    :func:`null_probability` add up to at most 1. Cost O(n * max_answer_tokens) (a sliding max)
    plus O(candidates * max_answer_tokens + mbr_candidates^2)."""
    n = start_logits.shape[0]
    if n == 0:
        return []
    ls, le = span_log_probs(start_logits, end_logits, temperature, null_logits)
    k = min(candidates, n)
    width = min(max_answer_tokens, n)
    # best end for each top start, and best start for each top end
    starts = torch.topk(ls, k).indices                                           # (k,)
    ends = torch.topk(le, k).indices
    # ends ranked by their best joint score (best start within reach: a sliding max), so the best
    # span is a candidate even when its start and its end are each outside the top k
    reach = F.pad(ls, (width - 1, 0), value=float("-inf")).unfold(0, width, 1)   # (n, width)
    joint_ends = torch.topk(reach.max(dim=1).values + le, k).indices
    cand_s, cand_e = candidate_pairs(starts, torch.cat([ends, joint_ends]), width, n)
    scores = ls[cand_s] + le[cand_e]
    if segments is not None:
        segments = segments.to(cand_s.device)
        scores = scores.masked_fill(segments[cand_s] != segments[cand_e], float("-inf"))
    return select_spans(cand_s, cand_e, scores, top_k, max_answer_tokens, mbr_temperature, mbr_candidates)


def span_log_probs(start_logits: torch.Tensor, end_logits: torch.Tensor, temperature: float = 1.0,
                   null_logits: Optional[Tuple[float, float]] = None):
    """Per-token log P(start), log P(end), (n,) each, under one softmax over the document's tokens
    (and the no-answer slot, when ``null_logits`` is given)."""
    s, e = start_logits.float() / temperature, end_logits.float() / temperature
    if null_logits is None:
        return torch.log_softmax(s, dim=0), torch.log_softmax(e, dim=0)
    ns = torch.tensor([null_logits[0] / temperature], device=s.device)
    ne = torch.tensor([null_logits[1] / temperature], device=s.device)
    return s - torch.logsumexp(torch.cat([ns, s]), 0), e - torch.logsumexp(torch.cat([ne, e]), 0)


def null_probability(start_logits: torch.Tensor, end_logits: torch.Tensor, null_logits: Tuple[float, float],
                     temperature: float = 1.0) -> float:
    """P(no answer) = P_start(null) * P_end(null) under the same softmax as the spans'."""
    s, e = start_logits.float() / temperature, end_logits.float() / temperature
    ns, ne = null_logits[0] / temperature, null_logits[1] / temperature
    log_p = (ns - torch.logsumexp(torch.cat([s.new_tensor([ns]), s]), 0)
             + ne - torch.logsumexp(torch.cat([e.new_tensor([ne]), e]), 0))
    return float(log_p.exp())


def candidate_pairs(starts: torch.Tensor, ends: torch.Tensor, width: int, n: int):
    """(start, end) token pairs to score: every top start with the ``width`` ends from it on,
    every candidate end with the ``width`` starts up to it. starts (k,), ends (k2,) ->
    two (k + k2, width) tensors (pairs past the document's edges are clamped, then invalid)."""
    offs = torch.arange(width, device=starts.device)
    k, k2 = starts.shape[0], ends.shape[0]
    cand_s = torch.cat([starts[:, None].expand(k, width), (ends[:, None] - offs).clamp(min=0)])
    cand_e = torch.cat([(starts[:, None] + offs).clamp(max=n - 1), ends[:, None].expand(k2, width)])
    return cand_s, cand_e


def select_spans(cand_s: torch.Tensor, cand_e: torch.Tensor, scores: torch.Tensor, top_k: int,
                 max_answer_tokens: int, mbr_temperature: float = 0.0, mbr_candidates: int = 64) -> List[Span]:
    """The ``top_k`` best valid pairs (``0 <= end - start < max_answer_tokens``), skipping any that
    overlaps a better one. "Best" is the log-score (``scores``, log P(span)), or with
    ``mbr_temperature > 0`` the expected F1 among the ``mbr_candidates`` most probable distinct
    pairs (see :func:`expected_f1`), those pairs first. Ties keep candidate order (stable sorts),
    so every caller given the same candidates returns the same spans. A span's ``score`` is always
    its probability."""
    valid = (cand_e >= cand_s) & (cand_e - cand_s < max_answer_tokens)
    flat = torch.where(valid, scores, torch.full_like(scores, float("-inf"))).flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    flat_s, flat_e = cand_s.flatten().tolist(), cand_e.flatten().tolist()

    def distinct():                                          # valid pairs, most probable first, once each
        seen = set()
        for idx in order.tolist():
            if flat[idx] == float("-inf"):
                return
            pair = (flat_s[idx], flat_e[idx])
            if pair not in seen:
                seen.add(pair)
                yield pair[0], pair[1], float(flat[idx])

    ranked = distinct()
    if mbr_temperature > 0:
        pool = list(itertools.islice(ranked, mbr_candidates))
        if len(pool) > 1:
            gain = expected_f1(torch.tensor([[a, b] for a, b, _ in pool]),
                               torch.tensor([c for _, _, c in pool], dtype=torch.float64), mbr_temperature)
            pool = [pool[i] for i in torch.argsort(gain, descending=True, stable=True).tolist()]
        ranked = itertools.chain(pool, ranked)
    spans: List[Span] = []
    for s, e, log_score in ranked:
        if len(spans) >= top_k:
            break
        if any(s <= kept.end and kept.start <= e for kept in spans):
            continue
        spans.append(Span(s, e, math.exp(log_score)))
    return spans


def expected_f1(pairs: torch.Tensor, log_scores: torch.Tensor, mbr_temperature: float) -> torch.Tensor:
    """pairs (m, 2) inclusive token spans, log_scores (m,). Returns (m,): each span's expected
    token-overlap F1 against the spans weighted by softmax(log_scores / mbr_temperature)."""
    p = torch.softmax(log_scores.double() / mbr_temperature, dim=0)                 # (m,)
    a, b = pairs[:, 0].double(), pairs[:, 1].double()
    overlap = (torch.minimum(b[:, None], b[None]) - torch.maximum(a[:, None], a[None]) + 1).clamp(min=0)
    f1 = 2 * overlap / ((b - a + 1)[:, None] + (b - a + 1)[None])                   # (m, m)
    return f1 @ p
