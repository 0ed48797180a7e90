"""Sequence-parallel reading: one document split over the processes of a ``torch.distributed`` group.

Each rank holds a contiguous, chunk-aligned shard of the document tokens and runs the model's
own modules on it (no copy of the weights)::

    question-free layers   [halo_l | shard | halo_r]          window halos from the neighbours
    summaries              one per chunk of the shard, then all-gathered (global tokens)
    question-aware layers  [question | summaries | halo_l | shard | halo_r], G global tokens
                           - shard rows: the layer module itself (their keys are all present)
                           - global rows: attention over every rank's keys, merged with the
                             log-sum-exp across ranks, then the layer's out/norm/MLP modules
    span head              start/end logits of the shard's tokens

so the shard logits equal the single-process logits up to float rounding (the sums run in a
different order). The question and the global rows are replicated on every rank. The layer
module also computes the global rows over the rank's local keys; those are discarded (a second
G x n_r of attention per question-aware layer: the attention op returns no log-sum-exp to merge).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from einops import rearrange

from ..document import load_document
from ..layout import DocumentInputs, QuestionInputs, question_inputs
from ..model import Layer, LongReaderModel
from ..reader import PreparedDocument
from .comm import all_gather_rows, exchange_halo, global_logsumexp, merge_partial_attention, rank_and_world
from .shards import ShardPlan, plan_shards
from .spans import distributed_best_spans, distributed_null_probability

KEY_BLOCK_ELEMENTS = 1 << 24     # score entries per block in the global rows' attention


@dataclass
class ShardLogits:
    start_logits: torch.Tensor   # (n_r,) float32, this rank's document tokens
    end_logits: torch.Tensor     # (n_r,)
    offset: int                  # first document token of the shard
    num_tokens: int              # n, the whole document
    plan: ShardPlan
    null_logits: Tuple[float, float] = (0.0, 0.0)   # the no-answer slot (the question's [CLS]), every rank


def _attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Full softmax attention of q (B, H, G, D) over k, v (B, H, M, D) in key blocks, in fp32.
    Returns out (B, H, G, D) and the log-sum-exp of the scores (B, H, G); -inf when M = 0."""
    q, k, v = q.float(), k.float(), v.float()
    bsz, heads, g, d = q.shape
    out = q.new_zeros(bsz, heads, g, d)
    lse = q.new_full((bsz, heads, g), float("-inf"))
    block = max(64, KEY_BLOCK_ELEMENTS // max(1, bsz * heads * g))
    for j in range(0, k.shape[2], block):
        scores = torch.einsum("bhgd,bhmd->bhgm", q, k[:, :, j:j + block]) * scale
        block_lse = torch.logsumexp(scores, dim=-1)
        block_out = torch.softmax(scores, dim=-1) @ v[:, :, j:j + block].float()
        new_lse = torch.logaddexp(lse, block_lse)
        out = out * torch.exp(lse - new_lse)[..., None] + block_out * torch.exp(block_lse - new_lse)[..., None]
        lse = new_lse
    return out, lse


def global_rows(layer: Layer, g: torch.Tensor, shard: torch.Tensor, group=None) -> torch.Tensor:
    """One question-aware layer for the global rows g (B, G, hidden), whose keys are the global
    rows themselves plus every rank's shard (B, n_r, hidden). Same mask and projections as
    ``SelfAttention.forward`` (Longformer's q/k/v_global when the model has them)."""
    attn = layer.attn
    proj = (attn.q_global, attn.k_global, attn.v_global) if attn.global_projections else (attn.q, attn.k, attn.v)
    q = attn._heads(proj[0](g))                                                  # (B, H, G, D)
    scale = q.shape[-1] ** -0.5
    out_doc, lse_doc = _attention_with_lse(q, attn._heads(proj[1](shard)), attn._heads(proj[2](shard)), scale)
    out_doc, lse_doc = merge_partial_attention(out_doc, lse_doc, group)         # over every rank's keys
    out_g, lse_g = _attention_with_lse(q, attn._heads(proj[1](g)), attn._heads(proj[2](g)), scale)
    lse = torch.logaddexp(lse_doc, lse_g)
    out = out_doc * torch.exp(lse_doc - lse)[..., None] + out_g * torch.exp(lse_g - lse)[..., None]
    y = rearrange(out.to(g.dtype), "b h n d -> b n (h d)")
    return layer.mlp(attn.norm(g + attn.drop(attn.out(y))))


def _halo_layer(model: LongReaderModel, index: int, shard: torch.Tensor, g: Optional[torch.Tensor],
                group) -> torch.Tensor:
    """Layer ``index`` for the shard rows: the layer module on [g | halo_l | shard | halo_r]."""
    left, right = model.config.attention_window
    halo_l, halo_r = exchange_halo(shard, left, right, group)
    parts = ([] if g is None else [g]) + [halo_l, shard, halo_r]
    num_global = 0 if g is None else g.shape[1]
    y = model.run_layers(torch.cat(parts, dim=1), index, index + 1, num_global)
    first = num_global + halo_l.shape[1]
    return y[:, first:first + shard.shape[1]]


def encode_shard(model: LongReaderModel, doc: DocumentInputs, plan: ShardPlan, group=None) -> torch.Tensor:
    """The question-free layers on this rank's shard (halos from the neighbours): (1, n_r, hidden).
    Independent of the question, so it can be cached per document."""
    rank, _ = rank_and_world(group)
    a, b = (int(t) for t in plan.token_bounds[rank:rank + 2])
    device = next(model.parameters()).device
    to = lambda t: t[:, a:b].to(device)  # noqa: E731
    x = model.embed(to(doc.input_ids), to(doc.position_ids), to(doc.token_type_ids))
    for i in range(model.config.question_free_layers):
        x = _halo_layer(model, i, x, None, group)
    return x


def sequence_parallel_logits(model: LongReaderModel, doc: DocumentInputs, question: QuestionInputs,
                             chunk_starts: np.ndarray, group=None, min_shard_tokens: int = 1,
                             shard_states: Optional[torch.Tensor] = None) -> ShardLogits:
    """Start/end logits of this rank's shard of the document (batch of 1), equal to the slice
    ``[offset, offset + n_r)`` of the single-process ``Reader.logits``. Every rank of ``group``
    calls it with the same inputs; ``chunk_starts`` (C + 1,) as in ``TokenizedDocument``;
    ``shard_states``: this rank's ``encode_shard`` output, if cached."""
    rank, world = rank_and_world(group)
    cfg = model.config
    plan = plan_shards(chunk_starts, world, max(min_shard_tokens, *cfg.attention_window))
    a, b = (int(t) for t in plan.token_bounds[rank:rank + 2])
    x = encode_shard(model, doc, plan, group) if shard_states is None else shard_states
    device = x.device
    g = model.encode_question(question.input_ids.to(device), question.position_ids.to(device),
                              question.token_type_ids.to(device))
    if doc.num_chunks > 0:
        c0, c1 = (int(c) for c in plan.chunk_bounds[rank:rank + 2])
        summaries, _ = model.summaries(x, doc.chunk_ids[:, a:b].to(device), doc.num_chunks)   # (1, C, hidden)
        counts = np.diff(plan.chunk_bounds).tolist()
        g = torch.cat([g, all_gather_rows(summaries[:, c0:c1].contiguous(), counts, group)], dim=1)
    for i in range(cfg.question_free_layers, cfg.num_hidden_layers):
        x, g = _halo_layer(model, i, x, g, group), global_rows(model.layers[i], g, x, group)
    out = model.span_logits(x)                                                   # (1, n_r) each
    null = model.span_logits(g[:, :1])                                           # the question's [CLS]
    return ShardLogits(out.start_logits[0], out.end_logits[0], a, int(chunk_starts[-1]), plan,
                       (float(null.start_logits[0, 0]), float(null.end_logits[0, 0])))


def shard_retrieval_prior(reader, prepared: PreparedDocument, question: str, shard: ShardLogits,
                          group=None) -> torch.Tensor:
    """``reader.retrieval_prior`` for this rank's tokens, (n_r,) float32: the rank embeds only the
    passages of its shard (passages never cross a chunk, shards are whole chunks) and the softmax
    normaliser over all passages is reduced across ranks."""
    from ..retrieval import passage_cosines

    lo, hi = shard.offset, shard.offset + len(shard.start_logits)
    token_passage, cosine = passage_cosines(reader.passage_encoder, prepared, question, lo, hi)
    logits = cosine.float() / reader.config.retrieval_temperature                 # (P_r,)
    norm = global_logsumexp(logits, group)
    return (logits - norm)[token_passage].to(shard.start_logits.device)


def sequence_parallel_answer(reader, doc, question: str, group=None, top_k: Optional[int] = None,
                             max_answer_tokens: Optional[int] = None, images: Optional[Sequence] = None,
                             allow_no_answer: Optional[bool] = None):
    """``reader.answer(doc, question, read="all")`` computed by every rank of ``group`` together:
    each rank encodes one shard, and every rank returns the same ``Answer`` (with alternatives).
    Every chunk is read (coarse-to-fine reading is single-process). Call it on every rank with the
    same arguments after ``torch.distributed.init_process_group``."""
    if not isinstance(doc, PreparedDocument):
        doc = load_document(doc)
    if isinstance(doc, PreparedDocument):
        carried = getattr(doc, "reading", None) is not None
    else:
        carried = bool(getattr(doc, "images", None))
    if images or carried:
        raise NotImplementedError("sequence-parallel reading handles text only: this document carries images; "
                                  "answer it with Reader.answer on one process, or drop the images")
    prepared = reader.prepare(doc)
    top_k = top_k or reader.config.top_k
    max_answer_tokens = max_answer_tokens or reader.config.max_answer_tokens
    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    model, min_tokens = reader.model, max(max_answer_tokens - 1, *reader.model.config.attention_window)
    plan = plan_shards(prepared.tokens.chunk_starts, rank_and_world(group)[1], min_tokens)
    key = ("shard", id(model), reader.dtype, rank_and_world(group), tuple(plan.token_bounds.tolist()))
    with torch.inference_mode():
        if prepared.states_key != key:        # the shard's question-free states, cached per document
            prepared.states, prepared.states_key = encode_shard(model, prepared.inputs, plan, group), key
        shard = sequence_parallel_logits(model, prepared.inputs, q, prepared.tokens.chunk_starts, group,
                                         min_tokens, shard_states=prepared.states)
        if reader.config.retrieval_weight:
            bonus = shard_retrieval_prior(reader, prepared, question, shard, group) * (
                reader.config.retrieval_weight * reader.config.temperature / 2)
            shard.start_logits, shard.end_logits = shard.start_logits + bonus, shard.end_logits + bonus
        null = shard.null_logits if reader.config.no_answer else None
        spans = distributed_best_spans(shard.start_logits, shard.end_logits, shard.offset, shard.num_tokens,
                                       group, top_k=top_k, max_answer_tokens=max_answer_tokens,
                                       temperature=reader.config.temperature,
                                       mbr_temperature=reader.config.mbr_temperature,
                                       mbr_candidates=reader.config.mbr_candidates, null_logits=null)
        p_null = None if null is None else distributed_null_probability(
            shard.start_logits, shard.end_logits, null, reader.config.temperature, group)
    allow = reader.config.no_answer if allow_no_answer is None else bool(allow_no_answer)
    answer = reader.assemble_answer(prepared, spans, question, p_null, allow)
    answer.chunks_read = list(range(prepared.tokens.num_chunks))
    return answer
