"""The held-out articles that fit a campaign reader's decoding are held out of its training, and
the questions evaluation reports are neither trained nor fitted on (``../shared/data``; skipped
without it)."""
import json
import sys
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "eval"))

pytestmark = pytest.mark.skipif(not (DATA_DIR / "squad" / "dev-v2.0.json").exists(), reason=f"{DATA_DIR} is absent")


def test_campaign_split_fits_on_held_out_articles_and_reports_on_others():
    from evaluate_qa import squad2_fitted_articles

    from longread.training.corpora import load_corpus, read_squad_json, squad2_parts
    from longread.training.fit_prior import heldout_sets

    covid, xquad = heldout_sets(DATA_DIR, "campaign")
    corpus = load_corpus(DATA_DIR, sources=("covidqa", "squad2"))
    trained_covid = {r.article for r in corpus.train["covidqa"]}
    assert covid and {r.article for r in covid} == {r.article for r in corpus.held["covidqa"]}
    assert not {r.article for r in covid} & trained_covid
    parts = squad2_parts(read_squad_json(DATA_DIR / "squad" / "dev-v2.0.json"))
    assert xquad and {r.article for r in xquad} <= parts["calibrate"]
    assert not {r.article for r in xquad} & {r.article for r in corpus.train["squad2"]}
    # evaluation's "unseen" XQuAD articles: neither the trained nor the fitted part
    with open(DATA_DIR / "xquad" / "xquad.en.json", encoding="utf-8") as f:
        titles = {a["title"] for a in json.load(f)["data"]}
    unseen = titles - squad2_fitted_articles(DATA_DIR / "squad" / "dev-v2.0.json")
    assert unseen and not unseen & ({r.article for r in xquad} | parts["train"])


def test_split_follows_the_recipe_in_the_config(tmp_path):
    from longread.training.fit_prior import training_split

    (tmp_path / "longread_config.json").write_text(json.dumps({"training": {"recipe": "longread.training.campaign"}}))
    assert training_split(tmp_path) == "campaign"
    (tmp_path / "longread_config.json").write_text(json.dumps({"training": {"args": {}}}))
    assert training_split(tmp_path) == "train"


def test_squad2_answerable_adds_the_training_third_answerable_questions_only():
    from longread.training.corpora import load_corpus, read_squad_json, squad2_parts

    plain = load_corpus(DATA_DIR, sources=("squad2",))
    both = load_corpus(DATA_DIR, sources=("squad2",), squad2_answerable=True)
    rows = read_squad_json(DATA_DIR / "squad" / "dev-v2.0.json")
    parts = squad2_parts(rows)
    assert all(r.answer_start < 0 for r in plain.train["squad2"])
    assert {r.id for r in plain.train["squad2"]} < {r.id for r in both.train["squad2"]}
    answerable = [r for r in both.train["squad2"] if r.answer_start >= 0]
    assert answerable and {r.article for r in both.train["squad2"]} <= parts["train"]
    expected = {r.id for r in rows if r.article in parts["train"] and r.answer_start >= 0}
    assert {r.id for r in answerable} == expected
    for r in answerable:
        assert r.context[r.answer_start:r.answer_start + len(r.answer_text)] == r.answer_text
    # every trained unanswerable paragraph now also carries answerable questions, in most cases
    unanswerable_paragraphs = {r.context for r in plain.train["squad2"]}
    with_answers = unanswerable_paragraphs & {r.context for r in answerable}
    assert len(with_answers) > 0.8 * len(unanswerable_paragraphs)
    assert {k: [r.id for r in v] for k, v in plain.held.items()} == {k: [r.id for r in v] for k, v in both.held.items()}
