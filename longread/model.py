"""The encoder and span head: a BERT-family transformer whose every self-attention is
``longread.kernels.sliding_window_attention`` (no dense N x N attention anywhere).

Two stages, split at ``question_free_layers = k``::

    layers < k   (document only, cacheable):  chunk tokens, sliding window, no global tokens
                 (positions restart in every chunk, so a 512-position checkpoint reads any length)
    at layer k:  one summary per chunk = mean of its tokens' states + a chunk-index signal
    layers >= k  (question-aware):  [CLS] question [SEP] | S_1 .. S_C | chunk tokens
                                    '------ global ------'-- global --'-- sliding window --'

so every token sees the question and a route to every other chunk, and the summaries see
each other. The lower stage never sees the question: its output is cached per document and
reused for every further question. ``k = 0`` is a plain Longformer-style encoder (checkpoint
parity with Hugging Face).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from longread.kernels import sliding_window_attention


MLP_SLICE = 1 << 15      # tokens per MLP slice at inference


@dataclass
class EncoderConfig:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    pad_token_id: int = 0
    position_offset: int = 0             # RoBERTa/Longformer position ids start at padding_idx + 1
    attention_window: Tuple[int, int] = (128, 128)   # (left, right) keys each token sees
    global_projections: bool = False     # Longformer: separate q/k/v projections for global rows
    question_free_layers: int = 0        # lower layers that never see the question (cacheable)
    chunk_signal: bool = True            # chunk-index signal added to the summary tokens
    gradient_checkpointing: bool = False

    def __post_init__(self):
        self.attention_window = tuple(self.attention_window)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if not 0 <= self.question_free_layers <= self.num_hidden_layers:
            raise ValueError(f"question_free_layers must be in [0, {self.num_hidden_layers}]")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QAOutput:
    start_logits: torch.Tensor           # (B, N)
    end_logits: torch.Tensor             # (B, N)
    hidden_states: Optional[torch.Tensor] = None     # (B, N, hidden)


def chunk_sinusoid(chunk_ids: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, N) int chunk index -> (B, N, dim) sinusoidal code (no parameters, any length)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=chunk_ids.device) / half)
    angles = chunk_ids.clamp(min=0).float()[..., None] * freqs                 # (B, N, half)
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(code, (0, dim - 2 * half))


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids):
        x = self.word(input_ids) + self.position(position_ids) + self.token_type(token_type_ids)
        return self.drop(self.norm(x))                                         # (B, N, hidden)


class Summaries(nn.Module):
    """One summary per chunk: the mean of the chunk's token states plus a chunk-index signal
    (sinusoid through a zero-initialised projection, so untrained it adds nothing)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.chunk_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False) if cfg.chunk_signal else None
        if self.chunk_proj is not None:
            nn.init.zeros_(self.chunk_proj.weight)

    def forward(self, states, chunk_ids, num_chunks: int, doc_mask: Optional[torch.Tensor] = None):
        """states (B, N, hidden), chunk_ids (B, N) in [0, num_chunks) for real tokens.
        Returns summaries (B, C, hidden) and their mask (B, C): True where the chunk has tokens."""
        bsz, n, hidden = states.shape
        real = (chunk_ids >= 0) if doc_mask is None else (doc_mask & (chunk_ids >= 0))        # (B, N)
        idx = chunk_ids.clamp(min=0) + num_chunks * torch.arange(bsz, device=states.device)[:, None]
        w = real.to(states.dtype)
        weighted = (states * w[..., None]).flatten(0, 1)
        sums = states.new_zeros(bsz * num_chunks, hidden).index_add_(0, idx.flatten(), weighted)
        counts = states.new_zeros(bsz * num_chunks).index_add_(0, idx.flatten(), w.flatten())
        summaries = (sums / counts.clamp(min=1)[:, None]).view(bsz, num_chunks, hidden)
        if self.chunk_proj is not None:
            code = chunk_sinusoid(torch.arange(num_chunks, device=states.device), hidden).to(states.dtype)
            summaries = summaries + self.chunk_proj(code)[None]
        return summaries, (counts > 0).view(bsz, num_chunks)


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        h = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.q, self.k, self.v = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        if cfg.global_projections:
            self.q_global, self.k_global, self.v_global = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.global_projections = cfg.global_projections
        self.out = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def _heads(self, x):
        return rearrange(x, "b n (h d) -> b h n d", h=self.n_head).contiguous()

    def forward(self, x, window, num_global, key_padding_mask, backend, rows=None):
        """``rows`` (M,): x holds only these positions of the N-long sequence (the others are
        masked keys whose states nothing reads); attention sees them at their positions, with
        zero q/k/v elsewhere, and every projection runs on the M rows alone."""
        if rows is None:
            q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))   # (B, H, N, D)
        else:
            n = key_padding_mask.shape[1]
            place = lambda t: t.new_zeros(t.shape[0], n, t.shape[2]).index_copy_(1, rows, t)  # noqa: E731
            q, k, v = (self._heads(place(proj(x))) for proj in (self.q, self.k, self.v))      # (B, H, N, D)
        y = sliding_window_attention(q, k, v, window=window, num_global=num_global,
                                     key_padding_mask=key_padding_mask, backend=backend)
        if rows is not None:
            y = y[:, :, rows]                                                     # (B, H, M, D)
        if self.global_projections and num_global > 0:
            # Longformer: global rows use their own projections over all keys (G x N, dense)
            qg = self._heads(self.q_global(x[:, :num_global]))                  # (B, H, G, D)
            kg, vg = self._heads(self.k_global(x)), self._heads(self.v_global(x))
            mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
            yg = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask)
            y = torch.cat([yg, y[:, :, num_global:]], dim=2)
        y = rearrange(y, "b h n d -> b n (h d)")
        return self.norm(x + self.drop(self.out(y)))                           # post-LN, as BERT


class MLP(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x):
        if not torch.is_grad_enabled() and x.shape[1] > MLP_SLICE:
            # inference on long inputs: the 4x-wide intermediate is made one slice at a time
            return torch.cat([self(x[:, i:i + MLP_SLICE]) for i in range(0, x.shape[1], MLP_SLICE)], dim=1)
        return self.norm(x + self.drop(self.down(F.gelu(self.up(x)))))


class Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, window, num_global, key_padding_mask, backend, rows=None):
        return self.mlp(self.attn(x, window, num_global, key_padding_mask, backend, rows))


class LongReaderModel(nn.Module):
    """Encoder + span head. ``forward`` returns start/end logits for every input position."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.embed = Embeddings(cfg)
        self.summaries = Summaries(cfg)
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.qa_head = nn.Linear(cfg.hidden_size, 2)
        self.attention_backend: Optional[str] = None     # None = auto (triton on CUDA, torch on CPU)
        self.fusion: Optional[nn.ModuleDict] = None      # gated image cross-attention (longread.vision.fusion)
        self.vision: Optional[nn.Module] = None          # patch encoder for those layers

    def run_layers(self, x, start: int, end: int, num_global: int,
                   key_padding_mask: Optional[torch.Tensor] = None, window=None, compact: bool = False):
        """Layers ``[start, end)`` on hidden states x (B, N, hidden); the first num_global are global.
        ``compact`` (inference, B = 1): only the unmasked rows are computed (masked rows, e.g. the
        gaps between the runs of a partial read, come back as zeros); the unmasked rows' result
        is the same."""
        window = tuple(window or self.config.attention_window)
        if compact and key_padding_mask is not None and x.shape[0] == 1 and not torch.is_grad_enabled():
            rows = key_padding_mask[0].nonzero()[:, 0]                            # (M,)
            y = x[:, rows]
            for layer in self.layers[start:end]:
                y = layer(y, window, num_global, key_padding_mask, self.attention_backend, rows)
            return x.new_zeros(x.shape).index_copy_(1, rows, y)
        for layer in self.layers[start:end]:
            if self.config.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, window, num_global, key_padding_mask,
                                                      self.attention_backend, use_reentrant=False)
            else:
                x = layer(x, window, num_global, key_padding_mask, self.attention_backend)
        return x

    def encode_question(self, input_ids, position_ids, token_type_ids,
                        key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Question segment (B, Lq) through the question-free layers, attending within itself."""
        x = self.embed(input_ids, position_ids, token_type_ids)
        lq = x.shape[1]
        return self.run_layers(x, 0, self.config.question_free_layers, 0, key_padding_mask, window=(lq, lq))

    def encode_document(self, input_ids, position_ids, token_type_ids,
                        key_padding_mask: Optional[torch.Tensor] = None,
                        slice_tokens: Optional[int] = None) -> torch.Tensor:
        """Document tokens (B, Nd) through the question-free layers (sliding window only).
        Independent of the question: the reader caches it. Returns (B, Nd, hidden).
        ``slice_tokens``: encode ``slice_tokens`` tokens at a time, each slice with a halo of
        ``question_free_layers x window`` tokens on both sides (the receptive field of those
        layers), so the result is the same and the working memory is one slice's."""
        n, k = input_ids.shape[1], self.config.question_free_layers
        halo = k * max(self.config.attention_window)
        if slice_tokens is None or k == 0 or n <= slice_tokens + 2 * halo:
            x = self.embed(input_ids, position_ids, token_type_ids)
            return self.run_layers(x, 0, k, 0, key_padding_mask)
        out = None
        for a in range(0, n, slice_tokens):
            b = min(n, a + slice_tokens)
            lo, hi = max(0, a - halo), min(n, b + halo)
            mask = None if key_padding_mask is None else key_padding_mask[:, lo:hi]
            part = self.encode_document(input_ids[:, lo:hi], position_ids[:, lo:hi], token_type_ids[:, lo:hi], mask)
            if out is None:
                out = part.new_empty(part.shape[0], n, part.shape[-1])
            out[:, a:b] = part[:, a - lo:b - lo]
        return out

    def read(self, question_states, doc_states, chunk_ids: Optional[torch.Tensor] = None, num_chunks: int = 0,
             question_mask: Optional[torch.Tensor] = None, doc_mask: Optional[torch.Tensor] = None,
             image_context=None, summaries: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> QAOutput:
        """Question-aware layers on [question | summaries | doc]; question and summaries are global.
        ``num_chunks = 0`` adds no summaries. Logits cover [question | doc] (summaries dropped).
        ``image_context`` (longread.vision.fusion.ImageContext): image patches for the fusion layers.
        ``summaries`` ((B, C, hidden), (B, C) mask): the chunk summaries, when ``doc_states`` holds
        only some of the document's chunks (default: made from ``doc_states``)."""
        bsz, lq = question_states.shape[:2]
        ones = lambda t: torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)  # noqa: E731
        parts, masks = [question_states], [question_mask if question_mask is not None else ones(question_states)]
        if num_chunks > 0:
            if summaries is None:
                summaries = self.summaries(doc_states, chunk_ids, num_chunks, doc_mask)
            summaries, summary_mask = summaries
            parts.append(summaries)
            masks.append(summary_mask)
        parts.append(doc_states)
        masks.append(doc_mask if doc_mask is not None else ones(doc_states))
        x = torch.cat(parts, dim=1)                                             # (B, Lq + C + Nd, hidden)
        mask = torch.cat(masks, dim=1)
        mask = None if bool(mask.all()) else mask
        if image_context is not None and self.fusion is not None:
            from longread.vision.fusion import run_fused_layers
            x = run_fused_layers(self, x, lq + num_chunks, mask, chunk_ids, image_context)
        else:
            x = self.run_layers(x, self.config.question_free_layers, len(self.layers), lq + num_chunks, mask,
                                compact=True)
        x = torch.cat([x[:, :lq], x[:, lq + num_chunks:]], dim=1)               # drop the summaries
        return self.span_logits(x)

    def span_logits(self, hidden: torch.Tensor) -> QAOutput:
        logits = self.qa_head(hidden).float()                                   # (B, N, 2)
        return QAOutput(start_logits=logits[..., 0], end_logits=logits[..., 1], hidden_states=hidden)

    def forward(self, input_ids, position_ids, token_type_ids, question_len: int,
                key_padding_mask: Optional[torch.Tensor] = None, chunk_ids: Optional[torch.Tensor] = None,
                num_chunks: int = 0) -> QAOutput:
        """One packed sequence (B, N) = [question (question_len) | document tokens].
        ``chunk_ids`` (B, N - question_len): chunk of each document token (needed when
        num_chunks > 0). Returns logits for every position of the packed sequence."""
        lq = question_len
        qm = dm = None
        if key_padding_mask is not None:
            qm, dm = key_padding_mask[:, :lq], key_padding_mask[:, lq:]
        xq = self.encode_question(input_ids[:, :lq], position_ids[:, :lq], token_type_ids[:, :lq], qm)
        xd = self.encode_document(input_ids[:, lq:], position_ids[:, lq:], token_type_ids[:, lq:], dm)
        return self.read(xq, xd, chunk_ids, num_chunks, qm, dm)
