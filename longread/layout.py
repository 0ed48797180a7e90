"""Document -> tokens -> chunks -> the packed model input.

The document is tokenized once (character offsets kept), cut into sentence/paragraph-aware
chunks of at most ``chunk_size`` tokens, and laid out as::

    question segment:  [CLS] q_1 .. q_m [SEP]      positions 0..m+1, type 0
    document segment:  chunk_1 .. chunk_C          positions q_budget + index in chunk, type 1

(the model adds one summary per chunk between the two). Document positions do not depend on
the question (they start after a fixed question budget), so the document segment and its
question-free layers can be cached across questions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
import numpy as np
import torch

from .errors import EmptyQuestionError, QuestionTooLongError

LONG_RUN = 256        # characters: a longer whitespace-free run is tokenized in pieces of this length
_LONG_RUN = re.compile(r"\S{%d,}" % (4 * LONG_RUN))
_SURROGATE = re.compile("[\ud800-\udfff]")
# a sentence ends at . ! ? (plus closing quotes/brackets) followed by space; paragraphs at blank lines
_BOUNDARY = re.compile(r"(?:[.!?][\"')\]]*\s+|\n\s*\n\s*|\r\n\s*\r\n\s*)")


@dataclass
class LayoutConfig:
    chunk_size: int = 256               # max tokens per chunk
    min_chunk_fraction: float = 0.5     # cut at a sentence end only past this fraction of chunk_size
    max_question_tokens: int = 96       # question budget, [CLS] and [SEP] included
    summary_tokens: bool = True         # one global summary per chunk in the question-aware layers
    position_offset: int = 0            # checkpoint's first position id (RoBERTa: 2)
    doc_token_type: int = 1             # 0 for checkpoints with a single token type
    max_position_embeddings: int = 512

    def __post_init__(self):
        room = self.max_position_embeddings - self.position_offset - self.max_question_tokens
        if self.chunk_size > room:
            raise ValueError(f"chunk_size {self.chunk_size} + question budget {self.max_question_tokens} "
                             f"exceeds the checkpoint's {self.max_position_embeddings} positions")


@dataclass
class TokenizedDocument:
    input_ids: np.ndarray      # (n,) int64, no special tokens
    offsets: np.ndarray        # (n, 2) char offsets into the document text
    chunk_starts: np.ndarray   # (C + 1,) token index where each chunk starts, then n
    sentence_starts: np.ndarray  # token indices where a sentence or paragraph begins

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_starts) - 1


def tokenizable(text: str) -> str:
    """``text`` with each lone surrogate (not encodable as UTF-8, refused by the tokenizer)
    replaced by U+FFFD: the same length, so offsets into it are offsets into ``text``."""
    return _SURROGATE.sub("\ufffd", text)


def _pieces(text: str):
    """(start, piece) covering ``text``: whole when no whitespace-free run is longer than
    LONG_RUN characters; otherwise such runs are cut into LONG_RUN-character pieces, tokenized
    apart (a tokenizer's cost grows faster than linearly with the length of one "word")."""
    if not _LONG_RUN.search(text):
        return [(0, text)]
    out, pos = [], 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > pos:
            out.append((pos, text[pos:m.start()]))
        out += [(i, text[i:min(i + LONG_RUN, m.end())]) for i in range(m.start(), m.end(), LONG_RUN)]
        pos = m.end()
    if pos < len(text):
        out.append((pos, text[pos:]))
    return out


def tokenize_document(text: str, tokenizer, cfg: LayoutConfig) -> TokenizedDocument:
    """Tokenize the whole text once and cut the tokens into chunks at sentence/paragraph ends."""
    ids_parts, offset_parts = [], []
    pieces = _pieces(tokenizable(text))
    enc = tokenizer([p for _, p in pieces], add_special_tokens=False, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)
    for (start, _), piece_ids, piece_offsets in zip(pieces, enc["input_ids"], enc["offset_mapping"]):
        ids_parts.append(np.asarray(piece_ids, dtype=np.int64))
        offset_parts.append(np.asarray(piece_offsets, dtype=np.int64).reshape(-1, 2) + start)
    ids = np.concatenate(ids_parts)
    offsets = np.concatenate(offset_parts).reshape(-1, 2)
    bounds = np.fromiter((m.end() for m in _BOUNDARY.finditer(text)), dtype=np.int64)
    # token index of the first token starting at or after each boundary
    sentence_starts = np.unique(np.searchsorted(offsets[:, 0], bounds)) if len(ids) else np.zeros(0, np.int64)
    return TokenizedDocument(ids, offsets, chunk_token_starts(len(ids), sentence_starts, cfg), sentence_starts)


def chunk_token_starts(n: int, sentence_starts: np.ndarray, cfg: LayoutConfig) -> np.ndarray:
    """Greedy chunking: fill up to chunk_size tokens, cut at the last sentence start past
    min_chunk_fraction of the chunk, else cut hard. Returns chunk starts followed by n."""
    starts, start = [], 0
    min_len = max(1, int(cfg.chunk_size * cfg.min_chunk_fraction))
    while start < n:
        starts.append(start)
        limit = start + cfg.chunk_size
        if limit >= n:
            break
        hi = np.searchsorted(sentence_starts, limit, side="right")   # candidates <= limit
        lo = np.searchsorted(sentence_starts, start + min_len, side="left")
        start = int(sentence_starts[hi - 1]) if hi > lo else limit
    return np.asarray(starts + [n], dtype=np.int64)


@dataclass
class DocumentInputs:
    """Model input for one document (batch of 1): its tokens, each with its chunk."""
    input_ids: torch.Tensor        # (1, n)
    position_ids: torch.Tensor     # (1, n): q_budget + index within the chunk
    token_type_ids: torch.Tensor   # (1, n)
    chunk_ids: torch.Tensor        # (1, n)
    num_chunks: int                # summaries the reader adds (0 when summary_tokens is off)
    token_chunk: np.ndarray        # (n,) chunk index of each document token


def document_inputs(tok: TokenizedDocument, cfg: LayoutConfig) -> DocumentInputs:
    n, c = tok.num_tokens, tok.num_chunks
    token_chunk = np.repeat(np.arange(c), np.diff(tok.chunk_starts))                  # (n,)
    in_chunk = np.arange(n) - tok.chunk_starts[token_chunk]                             # (n,)
    pos = cfg.position_offset + cfg.max_question_tokens + in_chunk
    t = lambda a: torch.as_tensor(a, dtype=torch.long)[None]  # noqa: E731
    return DocumentInputs(t(tok.input_ids), t(pos), torch.full((1, n), cfg.doc_token_type, dtype=torch.long),
                          t(token_chunk), c if cfg.summary_tokens else 0, token_chunk)


@dataclass
class QuestionInputs:
    input_ids: torch.Tensor        # (1, Lq)
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor


def question_inputs(question: str, tokenizer, cfg: LayoutConfig) -> QuestionInputs:
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise EmptyQuestionError("the question is empty; ask something about the document")
    ids = tokenizer(tokenizable(question), add_special_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)["input_ids"]
    if len(ids) <= tokenizer.num_special_tokens_to_add(pair=False):
        raise EmptyQuestionError("the question has no readable tokens (only control or format characters); "
                                 "ask something about the document")
    if len(ids) > cfg.max_question_tokens:
        raise QuestionTooLongError(
            f"the question has {len(ids)} tokens; this model takes at most {cfg.max_question_tokens} "
            f"(special tokens included). Shorten the question.")
    n = len(ids)
    return QuestionInputs(torch.tensor([ids]), cfg.position_offset + torch.arange(n)[None],
                          torch.zeros(1, n, dtype=torch.long))
