"""Passage embeddings read off the reader's own question-free states, instead of a second model's
pass over the whole document.

The passage prior (``retrieval.py``) compares a question's sentence embedding with one embedding
per passage (a sentence, cut at chunk starts). Embedding every passage with the sentence retriever
costs six more layers over every document token, more than the reader's question-free layers
themselves. A ``PassageHead`` is a linear map from the mean of a passage's question-free states
into the retriever's embedding space, fitted to the retriever's own passage embeddings
(``longread.training.fit_passage_head``); the question is still embedded by the retriever, from
its text. A reader with a head (``passage_head.safetensors``) and ``passage_encoder="head"``
prepares a document with its question-free layers alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PASSAGE_HEAD_NAME = "passage_head.safetensors"
PASSAGE_ENCODERS = ("retriever", "head")


class PassageHead(nn.Module):
    """(P, hidden) mean question-free state of each passage -> (P, dim) unit embeddings."""

    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(pooled.to(self.proj.weight.dtype)).float(), dim=-1)


def pool_passages(states: torch.Tensor, bounds: np.ndarray) -> torch.Tensor:
    """Mean of ``states`` (n, hidden) over each passage ``[bounds[p], bounds[p + 1])`` (bounds
    relative to ``states``, first 0 and last n): (P, hidden) float32."""
    lengths = torch.from_numpy(np.diff(bounds))                                   # (P,)
    token_passage = torch.repeat_interleave(torch.arange(len(lengths)), lengths).to(states.device)
    sums = states.new_zeros(len(lengths), states.shape[-1], dtype=torch.float32)
    sums.index_add_(0, token_passage, states.float())
    return sums / lengths.to(sums.device, torch.float32).clamp(min=1)[:, None]


class HeadPassageEncoder:
    """The passage prior's encoder for a reader with a ``PassageHead``: passages from the reader's
    cached question-free states, questions by the sentence retriever (``question_encoder``).
    Same interface as ``retrieval.ChunkRetriever`` for ``retrieval.passage_cosines``."""

    def __init__(self, reader, head: PassageHead, question_encoder):
        self.reader, self.head, self.question_encoder = reader, head, question_encoder
        self.tokenizer = reader.tokenizer        # passages are read in the reader's own token ids
        self.cache_key = ("head", id(head))

    @torch.inference_mode()
    def passage_embeddings(self, prepared, lo: int, hi: int, bounds: np.ndarray) -> torch.Tensor:
        """(P, d) unit embeddings of the passages ``bounds`` (document token indices in [lo, hi])."""
        states = self.reader.question_free_states(prepared, lo, hi)                 # (hi - lo, hidden)
        return self.head(pool_passages(states, bounds - lo)).cpu()

    def scores(self, question: str, passages: torch.Tensor) -> torch.Tensor:
        return self.question_encoder.scores(question, passages)


def load_passage_head(path: Path, hidden: int) -> PassageHead:
    """A ``PassageHead`` from its safetensors file (from longread.training.fit_passage_head)."""
    from .checkpoints import check_state, read_safetensors
    from .errors import CheckpointError

    state = read_safetensors(path, "passage head weights")
    weight = state.get("proj.weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(f"{path} holds no 2-D 'proj.weight': write it with longread.training.fit_passage_head")
    head = PassageHead(hidden, weight.shape[0])
    check_state(state, {k: v.shape for k, v in head.state_dict().items()}, path)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval()
