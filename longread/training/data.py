"""Training examples for the span reader, built from local SQuAD-format JSON with ``datasets``.

Every example is a (question, document window, answer span) where the document is laid out
exactly as at inference (chunks, summary tokens, positions), so training sees what the reader
sees. Sources:

* COVID-QA (long articles): ``answer_start`` is wrong for ~17% of answers; the answer is
  re-located by searching its text nearest the given offset. A window of ``target_tokens``
  tokens around the answer, at a random offset, is the document.
* XQuAD / SQuAD-style paragraphs: the gold paragraph is placed at a random depth in a haystack
  of other real paragraphs until the document reaches ``target_tokens``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch

from ..layout import (LayoutConfig, TokenizedDocument, chunk_token_starts, document_inputs, question_inputs,
                      tokenize_document)


@dataclass
class QARecord:
    id: str
    question: str
    context: str
    answer_text: str
    answer_start: int           # character offset, verified: context[start:start+len] == text
    article: str


def locate_answer(context: str, text: str, hint: int) -> Optional[int]:
    """Character offset of ``text`` in ``context`` nearest to ``hint``; None if absent."""
    if context[hint:hint + len(text)] == text:
        return hint
    best, pos = None, context.find(text)
    while pos != -1:
        if best is None or abs(pos - hint) < abs(best - hint):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def load_squad_records(source: str, split: str = "train") -> List[QARecord]:
    """QA records through ``datasets``, keeping answers that can be located in their context.

    ``source``: a SQuAD-format JSON file (``{"data": [{"title", "paragraphs": [...]}]}``, as in
    ``../shared/data``); a JSON-lines file in the flat schema of the hub's SQuAD datasets (one row
    per question: ``id``, ``title``, ``context``, ``question``, ``answers: {text: [...],
    answer_start: [...]}``); or, for users with internet access, a hub dataset name in that
    schema (``"squad"``, ``"rajpurkar/squad_v2"``, ...) with ``split``. Unanswerable questions are
    skipped."""
    from datasets import load_dataset

    path = Path(source)
    if path.suffix == ".json" and path.is_file():
        return _records_from_articles(load_dataset("json", data_files=str(path), field="data", split="train"))
    if path.suffix == ".jsonl" and path.is_file():
        return _records_from_rows(load_dataset("json", data_files=str(path), split="train"))
    if path.exists() or source.endswith((".json", ".jsonl")):
        raise FileNotFoundError(f"{source}: not a SQuAD JSON or JSON-lines file")
    return _records_from_rows(load_dataset(source, split=split))


def _record(qid, question, ctx, text, hint, article) -> Optional[QARecord]:
    start = locate_answer(ctx, text, int(hint))
    if start is None or not text.strip():
        return None
    return QARecord(str(qid), question, ctx, text, start, article)


def _records_from_articles(ds) -> List[QARecord]:
    records = []
    for article in ds:
        title = article.get("title") or ""
        for para in article["paragraphs"]:
            ctx = para["context"]
            for qa in para["qas"]:
                if qa["answers"]:
                    ans = qa["answers"][0]
                    rec = _record(qa["id"], qa["question"], ctx, ans["text"], ans["answer_start"], title or ctx[:40])
                    records.append(rec)
    return [r for r in records if r is not None]


def _records_from_rows(ds) -> List[QARecord]:
    records = []
    for row in ds:
        answers = row["answers"]
        if answers["text"]:
            records.append(_record(row["id"], row["question"], row["context"], answers["text"][0],
                                   answers["answer_start"][0], row.get("title") or row["context"][:40]))
    return [r for r in records if r is not None]


@dataclass
class Example:
    q_ids: torch.Tensor      # (Lq,)
    q_pos: torch.Tensor
    d_ids: torch.Tensor      # (Nd,) document tokens
    d_pos: torch.Tensor
    d_type: torch.Tensor
    d_chunk: torch.Tensor
    num_chunks: int          # summaries the model adds (0 when summary_tokens is off)
    start: int               # answer start/end as document-token indices
    end: int


def _window_example(tokenizer, cfg: LayoutConfig, question: str, text: str, ans_start: int, ans_end: int,
                    target_tokens: int, rng: random.Random) -> Optional[Example]:
    tok = tokenize_document(text, tokenizer, cfg)
    offs = tok.offsets
    if len(offs) == 0:
        return None
    s = int(np.searchsorted(offs[:, 1], ans_start, side="right"))          # first token ending after start
    e = int(np.searchsorted(offs[:, 0], ans_end, side="left")) - 1         # last token starting before end
    if s >= len(offs) or e < s:
        return None
    n = len(offs)
    span = min(target_tokens, n)
    lo = max(0, e - span + 1)
    hi = min(s, n - span)
    w0 = rng.randint(lo, max(lo, hi))
    w1 = min(n, w0 + span)
    ids = tok.input_ids[w0:w1]
    # re-chunk the window exactly as inference would chunk it
    ss = tok.sentence_starts
    sentence_starts = ss[(ss > w0) & (ss < w1)] - w0
    win = TokenizedDocument(ids, offs[w0:w1], chunk_token_starts(len(ids), sentence_starts, cfg), sentence_starts)
    d = document_inputs(win, cfg)
    q = question_inputs(question, tokenizer, cfg)
    return Example(q.input_ids[0], q.position_ids[0], d.input_ids[0], d.position_ids[0], d.token_type_ids[0],
                   d.chunk_ids[0], d.num_chunks, s - w0, e - w0)


def build_examples(records: Sequence[QARecord], tokenizer, cfg: LayoutConfig, target_tokens: Sequence[int],
                   haystack: Sequence[str], seed: int = 0, long_context: bool = False) -> List[Example]:
    """One example per record. ``long_context=False``: the record's own context is windowed
    (COVID-QA). ``True``: the paragraph is hidden in a haystack of other paragraphs."""
    rng = random.Random(seed)
    out = []
    for rec in records:
        target = rng.choice(list(target_tokens))
        text, start = rec.context, rec.answer_start
        if long_context:
            before, after = [], []
            budget_chars = target * 4 - len(text)           # ~4 characters per token
            while budget_chars > 0 and haystack:
                para = rng.choice(haystack)
                (before if rng.random() < 0.5 else after).append(para)
                budget_chars -= len(para) + 2
            prefix = "\n\n".join(before) + ("\n\n" if before else "")
            text = prefix + text + ("\n\n" if after else "") + "\n\n".join(after)
            start += len(prefix)
        ex = _window_example(tokenizer, cfg, rec.question, text, start, start + len(rec.answer_text), target, rng)
        if ex is not None:
            out.append(ex)
    return out


def collate(batch: Sequence[Example]):
    """Pad to [question Lq | document Nd] with a key padding mask. Returns the model inputs plus
    the answer's start/end positions in the packed sequence."""
    lq = max(len(ex.q_ids) for ex in batch)
    nd = max(len(ex.d_ids) for ex in batch)
    B, n = len(batch), lq + nd
    ids = torch.zeros(B, n, dtype=torch.long)
    pos = torch.zeros(B, n, dtype=torch.long)
    typ = torch.zeros(B, n, dtype=torch.long)
    chunk = torch.full((B, nd), -1, dtype=torch.long)
    mask = torch.zeros(B, n, dtype=torch.bool)
    doc = torch.zeros(B, n, dtype=torch.bool)                 # positions that may hold the answer
    start = torch.zeros(B, dtype=torch.long)
    end = torch.zeros(B, dtype=torch.long)
    for b, ex in enumerate(batch):
        q, t = len(ex.q_ids), len(ex.d_ids)
        ids[b, :q], pos[b, :q], mask[b, :q] = ex.q_ids, ex.q_pos, True
        ids[b, lq:lq + t], pos[b, lq:lq + t], typ[b, lq:lq + t] = ex.d_ids, ex.d_pos, ex.d_type
        chunk[b, :t] = ex.d_chunk
        mask[b, lq:lq + t] = doc[b, lq:lq + t] = True
        start[b], end[b] = lq + ex.start, lq + ex.end
    return dict(input_ids=ids, position_ids=pos, token_type_ids=typ, chunk_ids=chunk, key_padding_mask=mask,
                question_len=lq, num_chunks=max(ex.num_chunks for ex in batch), answer_mask=doc,
                start=start, end=end)


def batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> Iterator[dict]:
    """Shuffled batches of similar length (sorted within buckets of 50 batches) to limit padding."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    bucket = batch_size * 50
    for b0 in range(0, len(idx), bucket):
        chunk = sorted(idx[b0:b0 + bucket], key=lambda i: len(examples[i].d_ids))
        groups = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(groups)
        for g in groups:
            yield collate([examples[i] for i in g])
