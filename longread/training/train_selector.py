"""Train the chunk selector (``longread.selection.ChunkSelector``) on haystacks of SQuAD v1.1 train
paragraphs, and report how often it ranks the answer's chunk first / in the top k against the
passage prior alone, on held-out articles.

    python -m longread.training.train_selector --out runs/selector --minutes 20

Every paragraph is encoded once by the reader's question-free layers (one chunk summary per
chunk: the mean of its token states) and its sentences by the retriever. A training example is a
question and a haystack of ``--haystack`` chunks: every chunk of the question's own article (hard
negatives: same topic) plus random chunks of other articles, shuffled; the label is the chunk
holding the answer. The reader's layers stay frozen (the selector pass runs them on
``[question | summaries]``); only the head learns, with listwise cross-entropy. Held-out
haystacks are built from the held-out articles of ``corpora.py`` only.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from ..document import Document
from ..layout import question_inputs
from ..model import chunk_sinusoid
from ..passage_head import HeadPassageEncoder
from ..reader import Reader
from ..retrieval import passage_bounds
from ..selection import ChunkSelector, selector_pass
from .corpora import load_corpus

SELECTOR_NAME = "selector.safetensors"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--model", default=None, help="reader directory (default: the shipped reader)")
    p.add_argument("--out", default="runs/selector")
    p.add_argument("--articles", type=int, default=60, help="SQuAD train articles encoded for training")
    p.add_argument("--haystack", type=int, default=64, help="chunks per haystack")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--eval-questions", type=int, default=400)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class ChunkBank:
    """Chunk summaries (means of question-free states), passage embeddings and the questions'
    gold chunks for a set of paragraphs."""

    def __init__(self, reader: Reader, records, desc: str):
        self.means: List[torch.Tensor] = []          # per chunk (hidden,)
        self.article: List[str] = []                 # per chunk
        passage_emb, passage_chunk, head_emb = [], [], []
        self.chunk_tokens: List[np.ndarray] = []     # per chunk: its token ids
        self.questions = []                          # (question, gold chunk id, article)
        by_context: Dict[str, list] = defaultdict(list)
        for r in records:
            by_context[r.context].append(r)
        head = (None if reader.passage_head is None
                else HeadPassageEncoder(reader, reader.passage_head, reader.retriever))
        t0 = time.time()
        for i, (ctx, rows) in enumerate(by_context.items()):
            prepared = reader.prepare(Document(text=ctx))
            states = reader._document_states(prepared)[0].float()                # (n, hidden)
            starts = prepared.tokens.chunk_starts
            first_id = len(self.means)
            for a, b in zip(starts[:-1], starts[1:]):
                self.means.append(states[a:b].mean(0))
                self.article.append(rows[0].article)
            bounds = passage_bounds(prepared.tokens)
            ids = prepared.tokens.input_ids
            n = prepared.tokens.num_tokens
            passage_emb.append(reader.retriever.passage_embeddings(prepared, 0, n, bounds))
            if head is not None:
                head_emb.append(head.passage_embeddings(prepared, 0, n, bounds))
            self.chunk_tokens += [np.asarray(ids[a:b]) for a, b in zip(starts[:-1], starts[1:])]
            passage_chunk += [first_id + int(prepared.inputs.token_chunk[a]) for a in bounds[:-1]]
            offsets = prepared.tokens.offsets
            for r in rows:
                tok = min(int(np.searchsorted(offsets[:, 1], r.answer_start, side="right")), len(offsets) - 1)
                self.questions.append((r.question, first_id + int(prepared.inputs.token_chunk[tok]), r.article))
            reader._cache.clear()
            if (i + 1) % 200 == 0:
                print(f"{desc}: {i + 1}/{len(by_context)} paragraphs, {time.time() - t0:.0f} s", flush=True)
        self.means_t = torch.stack(self.means)                                        # (K, hidden)
        self.passage_emb = torch.cat(passage_emb)                                     # (P, d)
        # the same passages embedded by the reader's passage head, when it has one
        self.head_emb = torch.cat(head_emb) if head_emb else None                     # (P, d)
        self.passage_chunk = torch.tensor(passage_chunk)                              # (P,)
        self.by_article: Dict[str, List[int]] = defaultdict(list)
        for k, a in enumerate(self.article):
            self.by_article[a].append(k)
        q_emb = reader.retriever.embed([q for q, _, _ in self.questions])             # (Q, d)
        cos = q_emb @ self.passage_emb.T                                              # (Q, P)
        self.chunk_cos = torch.full((len(self.questions), len(self.means)), -1.0).scatter_reduce(
            1, self.passage_chunk.expand(len(self.questions), -1), cos, reduce="amax")   # (Q, K)

    def haystack(self, qi: int, size: int, rng: random.Random) -> List[int]:
        """Chunk ids: the question's article's chunks (the gold one always) plus random others."""
        _, gold, article = self.questions[qi]
        own = [k for k in self.by_article[article] if k != gold]
        rng.shuffle(own)
        chosen = [gold] + own[: size - 1]
        others = [k for k in range(len(self.means)) if self.article[k] != article]
        chosen += rng.sample(others, min(size - len(chosen), len(others)))
        rng.shuffle(chosen)
        return chosen


def batch_inputs(reader: Reader, bank: ChunkBank, items, size: int):
    """(question states (B, Lq, h), question mask, summaries (B, H, h), prior (B, H), gold (B,))."""
    model = reader.model
    qs = [question_inputs(bank.questions[qi][0], reader.tokenizer, reader.config.layout) for qi, _ in items]
    lq = max(q.input_ids.shape[1] for q in qs)
    ids = torch.zeros(len(qs), lq, dtype=torch.long)
    mask = torch.zeros(len(qs), lq, dtype=torch.bool)
    for i, q in enumerate(qs):
        ids[i, : q.input_ids.shape[1]] = q.input_ids[0]
        mask[i, : q.input_ids.shape[1]] = True
    pos = reader.config.layout.position_offset + torch.arange(lq)[None].expand(len(qs), -1)
    with torch.no_grad():
        q_states = model.encode_question(ids, pos, torch.zeros_like(ids), mask)
        code = chunk_sinusoid(torch.arange(size), model.config.hidden_size)
        signal = model.summaries.chunk_proj(code) if model.summaries.chunk_proj is not None else 0.0
    chunks = torch.tensor([hay for _, hay in items])                                    # (B, H)
    summaries = bank.means_t[chunks] + signal
    prior = torch.stack([bank.chunk_cos[qi, hay] for qi, hay in items])
    gold = torch.tensor([hay.index(bank.questions[qi][1]) for qi, hay in items])
    return q_states, mask, summaries, prior, gold


def rank_metrics(logits: torch.Tensor, gold: torch.Tensor, ks=(1, 4, 16)) -> Dict[str, float]:
    rank = (logits > logits.gather(1, gold[:, None])).sum(1)                           # 0 = first
    return {f"recall@{k}": 100.0 * float((rank < k).float().mean()) for k in ks}


def evaluate(reader, head, bank, items, size, batch):
    out = {"prior": [], "head": [], "fused": []}
    golds = []
    for b in range(0, len(items), batch):
        q_states, mask, summaries, prior, gold = batch_inputs(reader, bank, items[b:b + batch], size)
        with torch.no_grad():
            q_out, s_out = selector_pass(reader.model, q_states, summaries, mask)
            out["prior"].append(prior)
            out["head"].append(head(q_out, s_out))
            out["fused"].append(head(q_out, s_out, prior))
        golds.append(gold)
    gold = torch.cat(golds)
    return {name: rank_metrics(torch.cat(v), gold) for name, v in out.items()} | {"n": len(gold)}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    reader = Reader.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    reader.progress = False
    corpus = load_corpus(args.data_dir, ["squad"])
    train_articles = sorted({r.article for r in corpus.train["squad"]})
    rng.shuffle(train_articles)
    keep = set(train_articles[: args.articles])
    train_bank = ChunkBank(reader, [r for r in corpus.train["squad"] if r.article in keep], "train paragraphs")
    held_bank = ChunkBank(reader, corpus.held["squad"], "held-out paragraphs")
    eval_rng = random.Random(1)
    held_q = list(range(len(held_bank.questions)))
    eval_rng.shuffle(held_q)
    held_items = [(qi, held_bank.haystack(qi, args.haystack, eval_rng)) for qi in held_q[: args.eval_questions]]

    head = ChunkSelector(reader.model.config.hidden_size)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.01)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "selector_log.jsonl", "w")
    before = evaluate(reader, head, held_bank, held_items, args.haystack, args.batch)
    print("held-out before training", json.dumps(before), flush=True)
    log.write(json.dumps({"step": 0, "eval": before}) + "\n")
    t0, step = time.time(), 0
    while (time.time() - t0) / 60 < args.minutes and (args.max_steps is None or step < args.max_steps):
        qis = rng.sample(range(len(train_bank.questions)), args.batch)
        items = [(qi, train_bank.haystack(qi, args.haystack, rng)) for qi in qis]
        q_states, mask, summaries, prior, gold = batch_inputs(reader, train_bank, items, args.haystack)
        with torch.no_grad():
            q_out, s_out = selector_pass(reader.model, q_states, summaries, mask)
        loss = F.cross_entropy(head(q_out, s_out, prior), gold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            rec = {"step": step, "loss": round(loss.item(), 4), "minutes": round((time.time() - t0) / 60, 2),
                   "prior_weight": round(float(head.prior_weight), 3)}
            print(rec, flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
    after = evaluate(reader, head, held_bank, held_items, args.haystack, args.batch)
    print("held-out after training", json.dumps(after), flush=True)
    log.write(json.dumps({"step": step, "eval": after}) + "\n")
    log.close()
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(out / SELECTOR_NAME))
    summary = {"args": vars(args), "steps": step, "train_chunks": len(train_bank.means),
               "train_questions": len(train_bank.questions), "held_chunks": len(held_bank.means),
               "held_out_before": before, "held_out_after": after}
    with open(out / "selector.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
