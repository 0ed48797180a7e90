"""``longread.decoding.best_spans`` over a document whose logits are sharded across ranks.

The same candidate rule and the same scores as the single-process search, reduced across
ranks instead of computed on one array:

* the document-wide softmax normalisers (start and end): a log-sum-exp all-reduce;
* the top-``candidates`` starts, ends and "joint" ends: each rank's top list, all-gathered, then
  the global top; the joint score (best start within reach of an end) needs the previous
  rank's last ``max_answer_tokens - 1`` start scores (a halo);
* the candidates' log-probabilities: each rank fills in the tokens it holds, then a sum
  all-reduce (every token lives on exactly one rank, so the sum is exact).

Every rank then ranks the same candidates and returns the same spans. Communication is
O(world * candidates + candidates * max_answer_tokens) numbers, independent of the length.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from ..decoding import Span, candidate_pairs, select_spans
from .comm import all_gather_rows, all_reduce_, exchange_halo, global_logsumexp, rank_and_world


def _global_topk(values: torch.Tensor, offset: int, k: int, group) -> torch.Tensor:
    """Document indices of the k largest entries of the concatenation of every rank's ``values``."""
    _, world = rank_and_world(group)
    top = torch.topk(values, min(k, values.shape[0]))
    vals = torch.full((k,), float("-inf"), device=values.device)
    idx = torch.full((k,), -1, dtype=torch.long, device=values.device)
    vals[:top.values.shape[0]], idx[:top.indices.shape[0]] = top.values, top.indices + offset
    vals = all_gather_rows(vals[None], [k] * world, group)[0]                    # (world * k,)
    idx = all_gather_rows(idx[None], [k] * world, group)[0]
    return idx[torch.topk(vals, k).indices]


def _gather_at(values: torch.Tensor, offset: int, index: torch.Tensor, group) -> torch.Tensor:
    """values[index - offset] for the document indices ``index`` (any shape) held by any rank."""
    mine = (index >= offset) & (index < offset + values.shape[0])
    out = torch.zeros(index.shape, dtype=values.dtype, device=values.device)
    out[mine] = values[index[mine] - offset]
    return all_reduce_(out, group=group)


def distributed_best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, offset: int, n: int,
                           group=None, top_k: int = 5, max_answer_tokens: int = 30, temperature: float = 1.0,
                           candidates: int = 32, mbr_temperature: float = 0.0, mbr_candidates: int = 64,
                           null_logits=None) -> List[Span]:
    """start_logits, end_logits (n_r,): this rank's tokens ``[offset, offset + n_r)`` of a
    document of ``n`` tokens. Returns on every rank the spans ``best_spans`` returns for the
    whole document (document token indices, scores under the document-wide softmax, which holds
    the no-answer slot too when ``null_logits`` (start, end) is given)."""
    if n == 0:
        return []
    s = start_logits.float() / temperature
    e = end_logits.float() / temperature
    norm = _normalisers(s, e, null_logits, temperature, group)                   # (2,)
    ls, le = s - norm[0], e - norm[1]                                            # (n_r,) log-probs
    k = min(candidates, n)
    width = min(max_answer_tokens, n)
    starts = _global_topk(ls, offset, k, group)                                  # (k,)
    ends = _global_topk(le, offset, k, group)
    halo, _ = exchange_halo(ls[None], width - 1, 0, group)                        # previous rank's tail
    before = F.pad(halo[0], (width - 1 - halo.shape[1], 0), value=float("-inf"))
    reach = torch.cat([before, ls]).unfold(0, width, 1)                          # (n_r, width)
    joint_ends = _global_topk(reach.max(dim=1).values + le, offset, k, group)
    cand_s, cand_e = candidate_pairs(starts, torch.cat([ends, joint_ends]), width, n)
    joint = _gather_at(ls, offset, cand_s, group) + _gather_at(le, offset, cand_e, group)
    return select_spans(cand_s, cand_e, joint, top_k, max_answer_tokens, mbr_temperature, mbr_candidates)


def _normalisers(s: torch.Tensor, e: torch.Tensor, null_logits, temperature: float, group) -> torch.Tensor:
    """log-sum-exp of the start and end scores over the whole document (and the no-answer slot)."""
    norm = global_logsumexp(torch.stack([s, e]), group)                          # (2,)
    if null_logits is not None:
        norm = torch.logaddexp(norm, torch.tensor(null_logits, device=norm.device, dtype=norm.dtype) / temperature)
    return norm


def distributed_null_probability(start_logits: torch.Tensor, end_logits: torch.Tensor, null_logits,
                                 temperature: float = 1.0, group=None) -> float:
    """``decoding.null_probability`` over logits sharded across ranks (same value on every rank)."""
    s, e = start_logits.float() / temperature, end_logits.float() / temperature
    norm = _normalisers(s, e, null_logits, temperature, group)
    return float(torch.exp(null_logits[0] / temperature + null_logits[1] / temperature - norm.sum()))
