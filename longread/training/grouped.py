"""Training examples grouped by document: one document window, all the questions asked of it.

The question-free layers never see the question, so a document's lower-layer states are the
same for each of its questions: a group encodes its document once and reads it once per
question (``grouped_forward``). SQuAD has about 4.6 questions per paragraph and a CUAD window
carries up to ``max_questions`` of its contract's 41 questions, so the lower layers cost a
fraction of what one sequence per question costs, with the same gradients.

Labels: a question whose answer lies inside the window has its start/end token; a question the
window does not answer (unanswerable in the source, or, where ``sound_negatives``, its answer lies
wholly outside the window) points at the question's ``[CLS]`` (position 0), the no-answer slot.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LongreadError
from ..layout import LayoutConfig, TokenizedDocument, chunk_token_starts, document_inputs, question_inputs, \
    tokenize_document
from .data import QARecord

NULL = -1


@dataclass
class Question:
    ids: torch.Tensor        # (Lq,) [CLS] question [SEP]
    pos: torch.Tensor        # (Lq,)
    start: int               # answer's first/last document token in the window, NULL for no answer
    end: int
    record: QARecord


@dataclass
class Group:
    d_ids: torch.Tensor      # (Nd,)
    d_pos: torch.Tensor
    d_type: torch.Tensor
    d_chunk: torch.Tensor
    num_chunks: int
    questions: List[Question]
    offsets: np.ndarray      # (Nd, 2) character offsets of the window's tokens in the record context
    context: str


class GroupBuilder:
    """Tokenizes each context and question once (memoised across epochs) and cuts windows."""

    def __init__(self, tokenizer, layout: LayoutConfig):
        self.tokenizer, self.layout = tokenizer, layout
        self._docs: Dict[str, TokenizedDocument] = {}
        self._questions: Dict[str, Optional[Tuple[torch.Tensor, torch.Tensor]]] = {}

    def document(self, text: str) -> TokenizedDocument:
        if text not in self._docs:
            self._docs[text] = tokenize_document(text, self.tokenizer, self.layout)
        return self._docs[text]

    def question(self, text: str):
        if text not in self._questions:
            try:
                q = question_inputs(text, self.tokenizer, self.layout)
                self._questions[text] = (q.input_ids[0], q.position_ids[0])
            except LongreadError:          # empty or over-long questions are skipped
                self._questions[text] = None
        return self._questions[text]

    @staticmethod
    def token_span(tok: TokenizedDocument, rec: QARecord) -> Optional[Tuple[int, int]]:
        if rec.answer_start < 0:
            return None
        offs = tok.offsets
        s = int(np.searchsorted(offs[:, 1], rec.answer_start, side="right"))
        e = int(np.searchsorted(offs[:, 0], rec.answer_start + len(rec.answer_text), side="left")) - 1
        return (s, e) if s < len(offs) and e >= s else None

    def window(self, tok: TokenizedDocument, w0: int, w1: int, context: str, questions: List[Question]) -> Group:
        ss = tok.sentence_starts
        starts = ss[(ss > w0) & (ss < w1)] - w0
        ids = tok.input_ids[w0:w1]
        win = TokenizedDocument(ids, tok.offsets[w0:w1], chunk_token_starts(len(ids), starts, self.layout), starts)
        d = document_inputs(win, self.layout)
        return Group(d.input_ids[0], d.position_ids[0], d.token_type_ids[0], d.chunk_ids[0], d.num_chunks,
                     questions, tok.offsets[w0:w1], context)

    def label(self, tok, rec, w0, w1, sound_negatives: bool) -> Optional[Question]:
        """The question's label in window [w0, w1): its span, NULL, or None (not usable here)."""
        q = self.question(rec.question)
        if q is None:
            return None
        span = self.token_span(tok, rec)
        if rec.answer_start >= 0 and span is None:
            return None                                     # answer not locatable in tokens
        if span is not None and w0 <= span[0] and span[1] < w1:
            return Question(q[0], q[1], span[0] - w0, span[1] - w0, rec)
        if span is None or (sound_negatives and (span[1] < w0 or span[0] >= w1)):
            return Question(q[0], q[1], NULL, NULL, rec)
        return None                                         # straddles the window, or unsound negative

    def groups(self, records: Sequence[QARecord], window_tokens: Sequence[int], rng: random.Random,
               sound_negatives: bool, max_questions: int = 8, max_windows: Optional[int] = None) -> List[Group]:
        """Windows over each context: every window is cut around a not-yet-covered answer (at a
        random offset and a length from ``window_tokens``); a context no longer than the
        smallest window is one window. Each window takes up to ``max_questions`` questions of its
        context, answers first; at most ``max_windows`` windows per context are kept (at random)."""
        by_context: Dict[str, List[QARecord]] = defaultdict(list)
        for r in records:
            by_context[r.context].append(r)
        out = []
        for context, recs in by_context.items():
            tok = self.document(context)
            n = tok.num_tokens
            if n == 0:
                continue
            recs = list(recs)
            rng.shuffle(recs)
            todo = [r for r in recs if r.answer_start >= 0]
            covered = set()
            windows = []
            if n <= min(window_tokens):
                windows.append((0, n))
            else:
                for r in todo:
                    if r.id in covered:
                        continue
                    span = self.token_span(tok, r)
                    if span is None:
                        continue
                    size = min(n, rng.choice(list(window_tokens)))
                    lo, hi = max(0, span[1] - size + 1), min(span[0], n - size)
                    if hi < lo:                              # answer longer than the window
                        continue
                    w0 = rng.randint(lo, hi)
                    windows.append((w0, w0 + size))
                    for other in todo:
                        sp = self.token_span(tok, other)
                        if sp is not None and w0 <= sp[0] and sp[1] < w0 + size:
                            covered.add(other.id)
                if not windows and sound_negatives:          # a context with no answer at all
                    size = min(n, rng.choice(list(window_tokens)))
                    w0 = rng.randint(0, n - size)
                    windows.append((w0, w0 + size))
            if max_windows is not None and len(windows) > max_windows:
                windows = rng.sample(windows, max_windows)
            for w0, w1 in windows:
                labelled = [q for q in (self.label(tok, r, w0, w1, sound_negatives) for r in recs) if q is not None]
                pos = [q for q in labelled if q.start != NULL]
                neg = [q for q in labelled if q.start == NULL]
                rng.shuffle(pos)
                chosen = pos[:max_questions]
                chosen += neg[:max(0, max_questions - len(chosen))] if neg else []
                if chosen:
                    out.append(self.window(tok, w0, w1, context, chosen))
        return out


def add_foreign_negatives(groups: List[Group], pool: Sequence[QARecord], builder: GroupBuilder,
                          fraction: float, rng: random.Random) -> None:
    """To ``fraction`` of the groups add one question from another article: the window does not
    answer it (its article is elsewhere), so its label is NULL."""
    if not pool:
        return
    for g in groups:
        if rng.random() >= fraction:
            continue
        rec = rng.choice(pool)
        if g.questions and rec.article == g.questions[0].record.article:
            continue
        q = builder.question(rec.question)
        if q is not None:
            neg = QARecord(rec.id + "-foreign", rec.question, g.context, "", -1, g.questions[0].record.article)
            g.questions.append(Question(q[0], q[1], NULL, NULL, neg))


def cost(groups: Sequence[Group]) -> int:
    """Padded tokens of a batch: the documents once, then every question over its document."""
    nd = max(len(g.d_ids) for g in groups)
    lq = max(len(q.ids) for g in groups for q in g.questions)
    nq = sum(len(g.questions) for g in groups)
    c = max(g.num_chunks for g in groups)
    return len(groups) * nd + nq * (lq + c + nd)


def batches(groups: Sequence[Group], token_budget: int, rng: random.Random) -> List[List[int]]:
    """Batches of group indices of similar document length under ``token_budget`` padded tokens
    (see ``cost``), shuffled. Deterministic for a given rng state, so a run can resume at a batch."""
    idx = list(range(len(groups)))
    rng.shuffle(idx)
    bucket = 2000
    out = []
    for b0 in range(0, len(idx), bucket):
        part = sorted(idx[b0:b0 + bucket], key=lambda i: (len(groups[i].d_ids), len(groups[i].questions)))
        cur: List[int] = []
        for i in part:
            if cur and cost([groups[j] for j in cur + [i]]) > token_budget:
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
    rng.shuffle(out)
    return out


def collate(groups: Sequence[Group]) -> dict:
    """Documents (D, Nd) and questions (B, Lq) with ``doc_index`` (B,) naming each question's
    document, and the targets in the packed [question | document] coordinates of the logits."""
    D = len(groups)
    nd = max(len(g.d_ids) for g in groups)
    qs = [(d, q) for d, g in enumerate(groups) for q in g.questions]
    B, lq = len(qs), max(len(q.ids) for _, q in qs)
    d_ids = torch.zeros(D, nd, dtype=torch.long)
    d_pos = torch.zeros(D, nd, dtype=torch.long)
    d_type = torch.zeros(D, nd, dtype=torch.long)
    d_chunk = torch.full((D, nd), -1, dtype=torch.long)
    d_mask = torch.zeros(D, nd, dtype=torch.bool)
    for d, g in enumerate(groups):
        t = len(g.d_ids)
        d_ids[d, :t], d_pos[d, :t], d_type[d, :t], d_chunk[d, :t] = g.d_ids, g.d_pos, g.d_type, g.d_chunk
        d_mask[d, :t] = True
    q_ids = torch.zeros(B, lq, dtype=torch.long)
    q_pos = torch.zeros(B, lq, dtype=torch.long)
    q_mask = torch.zeros(B, lq, dtype=torch.bool)
    doc_index = torch.tensor([d for d, _ in qs], dtype=torch.long)
    start = torch.zeros(B, dtype=torch.long)
    end = torch.zeros(B, dtype=torch.long)
    for b, (d, q) in enumerate(qs):
        n = len(q.ids)
        q_ids[b, :n], q_pos[b, :n], q_mask[b, :n] = q.ids, q.pos, True
        if q.start != NULL:
            start[b], end[b] = lq + q.start, lq + q.end
    allowed = torch.cat([torch.zeros(B, lq, dtype=torch.bool), d_mask[doc_index]], dim=1)
    allowed[:, 0] = True                                       # [CLS]: the no-answer slot
    return dict(d_ids=d_ids, d_pos=d_pos, d_type=d_type, d_chunk=d_chunk, d_mask=d_mask, q_ids=q_ids,
                q_pos=q_pos, q_mask=q_mask, doc_index=doc_index, num_chunks=max(g.num_chunks for g in groups),
                question_len=lq, allowed=allowed, start=start, end=end, questions=[q for _, q in qs],
                groups=list(groups))


def grouped_forward(model, batch: dict, device):
    """Lower layers once per document, upper layers once per question. Logits (B, Lq + Nd)."""
    to = lambda k: batch[k].to(device)  # noqa: E731
    d_mask = to("d_mask")
    xd = model.encode_document(to("d_ids"), to("d_pos"), to("d_type"), d_mask)           # (D, Nd, H)
    q_ids, q_mask = to("q_ids"), to("q_mask")
    xq = model.encode_question(q_ids, to("q_pos"), torch.zeros_like(q_ids), q_mask)      # (B, Lq, H)
    idx = to("doc_index")
    return model.read(xq, xd[idx], to("d_chunk")[idx], batch["num_chunks"], q_mask, d_mask[idx])


def grouped_loss(out, batch: dict) -> torch.Tensor:
    allowed = batch["allowed"].to(out.start_logits.device)
    s = out.start_logits.float().masked_fill(~allowed, float("-inf"))
    e = out.end_logits.float().masked_fill(~allowed, float("-inf"))
    tgt_s, tgt_e = batch["start"].to(s.device), batch["end"].to(s.device)
    return (F.cross_entropy(s, tgt_s) + F.cross_entropy(e, tgt_e)) / 2


def iterate(groups: Sequence[Group], order: Sequence[Sequence[int]], skip: int = 0) -> Iterator[dict]:
    for batch in order[skip:]:
        yield collate([groups[i] for i in batch])
