"""Speed of the longread reader next to two Hugging Face baselines, on the same real documents.

Systems (all in the reader's dtype, on the same device, same tokenizer):

* ``longread``: the reader (``--model`` or the shipped default). Time to first answer, split into
  tokenization (+ layout) and encoder + span decoding, then the time of each further question
  on the same document (its question-free encoding is cached: ``further / first``).
* ``hf-window``: the classic Hugging Face extractive QA recipe: stride windows of
  ``--max-seq-len`` 384 tokens overlapping by ``--doc-stride`` 128, a ``BertForQuestionAnswering``
  on every window, the best span over all windows. Its weights are the reader's own (every
  merged weight copied by inverting ``longread.checkpoints._RENAMES``; checked at start-up:
  HF logits == longread logits on a short input with a covering window and no question-free
  layers). transformers 5 dropped the ``question-answering`` pipeline, so the windowing, batching
  and span choice of that pipeline are re-implemented here on the HF tokenizer and model.
* ``longformer``: ``LongformerForQuestionAnswering`` with RANDOM weights and a config of similar
  size (hidden 384, 6 layers, 12 heads, attention_window 256), global attention on the question:
  a speed peer only (its answers mean nothing), run up to ``--longformer-max-tokens``.

Documents: the COVID-QA dev articles concatenated, then Wikipedia lead sections, cut to each
target length in tokens; questions: the first COVID-QA article's (it opens every document).

    python eval/bench_reader.py                       # CPU: 2000,5000,20000 tokens; GPU: + 100k, 1M
    python eval/bench_reader.py --quick               # 1000,2000 tokens, 2 questions
    python eval/bench_reader.py --model DIR --lengths 5000 --systems longread,hf-window

Writes results/bench_reader.json and results/bench_reader.md (``--out``); also checks the CPU
target (a 20k-token document answered in <= 5 s by the reader).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DATA_DIR, PROJECT_ROOT, PeakMemory, Timer, environment, load_squad, load_wiki,  # noqa: E402
                     markdown_table, reader_description, reader_from_args, report)

from longread.decoding import best_spans  # noqa: E402
from longread.layout import question_inputs  # noqa: E402
from longread.checkpoints import to_hf_bert_state_dict  # noqa: E402

CPU_LENGTHS = (2000, 5000, 20000)
GPU_EXTRA_LENGTHS = (100_000, 1_000_000)
QUICK_LENGTHS = (1000, 2000)
SYSTEMS = ("longread", "hf-window", "longformer")
WARM_TOKENS = 8192
CPU_TARGET = {"tokens": 20000, "seconds": 5.0}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: the shipped default reader)")
    p.add_argument("--lengths", default=None,
                   help="comma-separated document lengths in tokens (default: 2000,5000,20000 on CPU, "
                        "plus 100000,1000000 on GPU; --quick: 1000,2000)")
    p.add_argument("--questions", type=int, default=None, help="questions per document (default 3; --quick: 2)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    p.add_argument("--covidqa", default=str(DATA_DIR / "covidqa" / "dev.json"))
    p.add_argument("--wiki", default=str(DATA_DIR / "wiki" / "summaries_en.json"))
    p.add_argument("--max-seq-len", type=int, default=384, help="hf-window: window length in tokens")
    p.add_argument("--doc-stride", type=int, default=128, help="hf-window: overlap between windows in tokens")
    p.add_argument("--hf-batch-size", type=int, default=16, help="hf-window: windows per forward pass")
    p.add_argument("--hf-max-tokens", type=int, default=None,
                   help="longest document given to hf-window (default: every length; each question re-reads "
                        "the whole document, so 1M tokens take many minutes per question on a CPU)")
    p.add_argument("--longformer-max-tokens", type=int, default=None,
                   help="longest document given to the Longformer peer (default 20000 on CPU, 100000 on GPU)")
    p.add_argument("--quick", action="store_true", help="lengths 1000,2000 and 2 questions (a smoke test)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (the reader's default), float32, bfloat16")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PROJECT_ROOT / "results" / "bench_reader.json"),
                   help="JSON output path; the markdown table goes next to it (.md)")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = set(args.systems) - set(SYSTEMS)
    if bad:
        p.error(f"unknown --systems {sorted(bad)}; choose from {SYSTEMS}")
    if args.questions is None:
        args.questions = 2 if args.quick else 3
    if args.questions < 1:
        p.error("--questions must be >= 1")
    return args


def default_lengths(device: torch.device, quick: bool) -> List[int]:
    if quick:
        return list(QUICK_LENGTHS)
    return list(CPU_LENGTHS) + (list(GPU_EXTRA_LENGTHS) if device.type == "cuda" else [])


# ----------------------------------------------------------------------------- documents
def build_corpus(covid_path, wiki_path, tokenizer, max_tokens: int) -> Tuple[str, list, List[str]]:
    """Real text of at least ``max_tokens`` tokens: COVID-QA articles, then Wikipedia leads.
    Returns (text, token offsets, questions of the first article)."""
    docs = [d for d in load_squad(covid_path) if d["context"].strip()]
    if not docs or not docs[0]["qas"]:
        raise SystemExit(f"{covid_path}: the first article has no questions")
    questions = [qa["question"] for qa in docs[0]["qas"]]
    parts = [d["context"].strip() for d in docs]
    wiki_texts = iter([v.get("extract", "").strip() for v in load_wiki(wiki_path).values()])
    chars_per_token = 3.0          # a low guess, so one extra round is rare
    chars = sum(len(p) for p in parts) + 2 * (len(parts) - 1)      # of "\n\n".join(parts), kept up to date
    while True:
        if chars >= max_tokens * chars_per_token:
            text = "\n\n".join(parts)
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                verbose=False)["offset_mapping"]
            if len(offsets) >= max_tokens:
                return text, offsets, questions
            chars_per_token *= 1.3
            continue
        extra = next(wiki_texts, None)
        if extra is None:
            text = "\n\n".join(parts)
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                verbose=False)["offset_mapping"]
            if len(offsets) >= max_tokens:
                return text, offsets, questions
            raise SystemExit(f"--covidqa and --wiki hold only {len(offsets)} tokens; --lengths asks for {max_tokens}")
        if extra:
            parts.append(extra)
            chars += len(extra) + 2


def cut(text: str, offsets, n_tokens: int) -> str:
    return text[: offsets[n_tokens - 1][1]]


# ----------------------------------------------------------------------------- longread -> HF BERT
state_dict_to_hf_bert = to_hf_bert_state_dict


def reader_to_hf_bert(reader) -> Tuple[torch.nn.Module, List[str]]:
    """A ``BertForQuestionAnswering`` holding every (LoRA-merged) weight of ``reader.model``, in
    float32 on the CPU (cast it to the reader's dtype and device to run it). Returns (model,
    notes on what HF cannot express)."""
    from transformers import BertConfig, BertForQuestionAnswering

    cfg = reader.model.config
    if cfg.model_type != "bert" or cfg.global_projections:
        raise ValueError(f"only BERT-type readers convert to BertForQuestionAnswering (got {cfg.model_type})")
    state = {k: v.detach().to("cpu", torch.float32) for k, v in reader.model.state_dict().items()}
    hf_state, left = state_dict_to_hf_bert(state)
    notes = []
    if "summaries.chunk_proj.weight" in left:
        left.remove("summaries.chunk_proj.weight")
        notes.append("the chunk summaries (global tokens of the question-aware layers) have no HF counterpart: "
                     "HF windows read without them")
    if left:
        raise ValueError(f"weights with no BertForQuestionAnswering counterpart: {left}")
    hf_cfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                        type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                        pad_token_id=cfg.pad_token_id, hidden_act="gelu", position_embedding_type="absolute")
    model = BertForQuestionAnswering(hf_cfg)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"HF conversion mismatch: missing {missing}, unexpected {unexpected}")
    if cfg.question_free_layers > 0:
        notes.append(f"the reader's question_free_layers={cfg.question_free_layers} (its lower layers see the "
                     "document and the question separately, so the document part is cached) cannot be expressed "
                     "by BertForQuestionAnswering: the HF baseline runs every layer on question + window jointly")
    notes.append("HF windows use consecutive positions (question, then context) and no chunk-summary tokens; "
                 "longread places document tokens at max_question_tokens + index in chunk: same weights, different "
                 "input layout, so hf-window answers are a speed reference, not an accuracy one")
    return model.eval(), notes


@torch.inference_mode()
def check_hf_equivalence(reader, hf_model, text: str, question: str) -> dict:
    """Our logits vs HF's on one short packed input, both in float32 on the CPU (``hf_model`` as
    returned by ``reader_to_hf_bert``), with question_free_layers forced to 0 and a window
    covering the whole input. (With the reader's own question_free_layers, when > 0, the
    difference is reported too: it is what HF cannot express.)"""
    tok, layout = reader.tokenizer, reader.config.layout
    q = question_inputs(question, tok, layout)
    prepared = reader.prepare(text)
    if prepared.tokens.num_chunks != 1:
        raise ValueError("the equivalence check needs a one-chunk text")
    d = prepared.inputs
    ids = torch.cat([q.input_ids, d.input_ids], 1)
    pos = torch.cat([q.position_ids, d.position_ids], 1)
    tt = torch.cat([q.token_type_ids, d.token_type_ids], 1)
    n, lq = ids.shape[1], q.input_ids.shape[1]
    ours = copy.deepcopy(reader.model).to("cpu", torch.float32).eval()
    theirs = hf_model.to("cpu", torch.float32).eval()
    result = {"tokens": n, "question_free_layers_of_reader": reader.model.config.question_free_layers}
    for qfl in sorted({0, reader.model.config.question_free_layers}):
        ours.config = dataclasses.replace(ours.config, question_free_layers=qfl, attention_window=(n, n))
        out = ours(ids, pos, tt, question_len=lq)                       # no summaries: HF has none
        hf = theirs(input_ids=ids, token_type_ids=tt, position_ids=pos, attention_mask=torch.ones_like(ids))
        diff = max((out.start_logits - hf.start_logits.float()).abs().max().item(),
                   (out.end_logits - hf.end_logits.float()).abs().max().item())
        result[f"max_abs_logit_diff_qfl{qfl}"] = diff
    result["max_abs_logit_diff"] = result["max_abs_logit_diff_qfl0"]
    result["ok"] = result["max_abs_logit_diff"] < 1e-3
    return result


# ----------------------------------------------------------------------------- HF stride windows
class HFWindowQA:
    """The Hugging Face stride-window QA recipe (as the former ``question-answering`` pipeline):
    overflowing windows of ``max_seq_len`` tokens overlapping by ``doc_stride``, per-window softmax
    over the context tokens, the best span (end >= start, at most ``max_answer_len`` tokens) of
    every window, the most probable over all windows."""

    def __init__(self, model, tokenizer, device, max_seq_len=384, doc_stride=128, max_answer_len=30,
                 batch_size=16):
        self.model, self.tok, self.device = model, tokenizer, device
        self.max_seq_len, self.doc_stride = max_seq_len, doc_stride
        self.max_answer_len, self.batch_size = max_answer_len, batch_size

    @torch.inference_mode()
    def answer(self, question: str, context: str) -> dict:
        t0 = time.perf_counter()
        enc = self.tok(question, context, truncation="only_second", max_length=self.max_seq_len,
                       stride=self.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                       padding="longest", return_tensors="pt")
        n_win, width = enc["input_ids"].shape
        is_ctx = torch.tensor([[s == 1 for s in enc.sequence_ids(i)] for i in range(n_win)])
        tokenize_s = time.perf_counter() - t0
        band = torch.ones(width, width, dtype=torch.bool, device=self.device)
        band = torch.triu(band) & ~torch.triu(band, diagonal=self.max_answer_len)   # 0 <= e - s < max_len
        best = (-math.inf, 0, 0, 0)                                                # log p, window, s, e
        for b0 in range(0, n_win, self.batch_size):
            sl = slice(b0, b0 + self.batch_size)
            feed = {k: enc[k][sl].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")
                    if k in enc}
            out = self.model(**feed)
            ctx = is_ctx[sl].to(self.device)
            neg = torch.tensor(-math.inf, device=self.device)
            ls = torch.log_softmax(torch.where(ctx, out.start_logits.float(), neg), dim=-1)     # (B, L)
            le = torch.log_softmax(torch.where(ctx, out.end_logits.float(), neg), dim=-1)
            scores = torch.where(band, ls[:, :, None] + le[:, None, :], neg)                  # (B, L, L)
            flat = scores.flatten(1).max(dim=1)
            w = int(flat.values.argmax())
            value = float(flat.values[w])
            if value > best[0]:
                idx = int(flat.indices[w])
                best = (value, b0 + w, idx // width, idx % width)
        logp, w, s, e = best
        offsets = enc["offset_mapping"][w]
        start, end = int(offsets[s][0]), int(offsets[e][1])
        return {"text": context[start:end], "start": start, "end": end, "score": math.exp(logp),
                "windows": n_win, "tokenize_s": tokenize_s}


# ----------------------------------------------------------------------------- Longformer peer
class LongformerPeer:
    """``LongformerForQuestionAnswering`` with random weights (speed only)."""

    def __init__(self, tokenizer, max_tokens: int, device, dtype, seed: int = 0, max_question_tokens: int = 96):
        from transformers import LongformerConfig, LongformerForQuestionAnswering

        window = 256
        self.tok, self.device = tokenizer, device
        self.max_tokens = max_tokens
        self.max_question_tokens = max_question_tokens
        # positions run from pad_token_id + 1 over the unpadded input; +2 like Longformer's 4096 + 2
        n_pos = max_tokens + max_question_tokens + 2 + tokenizer.pad_token_id + 1
        self.config = LongformerConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6,
                                       num_attention_heads=12, intermediate_size=1536, attention_window=window,
                                       max_position_embeddings=n_pos, type_vocab_size=1,
                                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                                       eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id)
        torch.manual_seed(seed)
        self.model = LongformerForQuestionAnswering(self.config).to(device=device, dtype=dtype).eval()

    def describe(self) -> dict:
        return {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "attention_window": 256,
                "max_position_embeddings": self.config.max_position_embeddings,
                "parameters": sum(p.numel() for p in self.model.parameters()), "weights": "random"}

    @torch.inference_mode()
    def answer(self, question: str, context: str) -> dict:
        t0 = time.perf_counter()
        q_ids = self.tok(question, add_special_tokens=False, verbose=False)["input_ids"]
        q_ids = q_ids[: self.max_question_tokens - 2]
        enc = self.tok(context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        d_ids, offsets = enc["input_ids"], enc["offset_mapping"]
        ids = [self.tok.cls_token_id, *q_ids, self.tok.sep_token_id, *d_ids, self.tok.sep_token_id]
        lq = len(q_ids) + 2
        input_ids = torch.tensor([ids], device=self.device)
        glob = torch.zeros_like(input_ids)
        glob[:, :lq] = 1                                           # global attention on the question
        tokenize_s = time.perf_counter() - t0
        out = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         global_attention_mask=glob)
        s_log = out.start_logits[0, lq:lq + len(d_ids)]
        e_log = out.end_logits[0, lq:lq + len(d_ids)]
        span = best_spans(s_log, e_log, top_k=1, max_answer_tokens=30)[0]
        start, end = offsets[span.start][0], offsets[span.end][1]
        return {"text": context[start:end], "start": start, "end": end, "score": span.score,
                "tokenize_s": tokenize_s}


# ----------------------------------------------------------------------------- measurement
def _row(system: str, length: int, doc_tokens: int, first_s: float, further: List[float], tokenize_s, mem,
         **extra) -> dict:
    further_s = sum(further) / len(further) if further else None
    row = {"system": system, "length": length, "doc_tokens": doc_tokens,
           "first_question_s": first_s, "tokenize_s": tokenize_s,
           "encode_decode_s": None if tokenize_s is None else first_s - tokenize_s,
           "further_question_s": further_s,
           "further_over_first": None if further_s is None else further_s / first_s,
           "tokens_per_s": doc_tokens / first_s if first_s > 0 else None,
           "total_s": first_s + sum(further), "questions": 1 + len(further),
           "peak_memory_mb": mem.peak_mb, "peak_memory_over_start_mb": mem.extra_mb,
           "peak_memory_kind": mem.kind, "peak_memory_reset": mem.reset}
    row.update(extra)
    return row


def bench_longread(reader, text: str, questions: List[str], length: int) -> dict:
    reader._cache.clear()            # no public API: start from an uncached document
    dev = reader.device
    with PeakMemory(dev) as mem:
        with Timer(dev) as t_tok:
            prepared = reader.prepare(text)
        with Timer(dev) as t_enc:
            first = reader.answer(prepared, question=questions[0])
        further = []
        for q in questions[1:]:
            with Timer(dev) as t:
                reader.answer(prepared, question=q)
            further.append(t.seconds)
    reader._cache.clear()
    return _row("longread", length, prepared.num_tokens, t_tok.seconds + t_enc.seconds, further, t_tok.seconds, mem,
                chunks=int(prepared.tokens.num_chunks), first_answer=first.text[:80])


def bench_answerer(system: str, answerer, text: str, questions: List[str], length: int, doc_tokens: int,
                   device) -> dict:
    times, tok_times, first = [], [], None
    with PeakMemory(device) as mem:
        for q in questions:
            with Timer(device) as t:
                res = answerer.answer(q, text)
            times.append(t.seconds)
            tok_times.append(res["tokenize_s"])
            first = first or res
    extra = {"first_answer": first["text"][:80]}
    if "windows" in first:
        extra["windows"] = first["windows"]
    return _row(system, length, doc_tokens, times[0], times[1:], tok_times[0], mem, **extra)


def _error_row(system: str, length: int, exc: BaseException) -> dict:
    return {"system": system, "length": length, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def render_markdown(result: dict) -> str:
    env = result["environment"]
    rows = []
    for r in result["results"]:
        if "error" in r:
            rows.append([r["system"], r["length"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", r["error"][:60]])
            continue
        rows.append([r["system"], r["length"], r["doc_tokens"], r["first_question_s"], r["tokenize_s"],
                     r["encode_decode_s"], r["further_question_s"], r["further_over_first"], r["tokens_per_s"],
                     r["peak_memory_mb"], r["peak_memory_over_start_mb"], r["total_s"], r.get("windows", "")])
    table = markdown_table(["system", "length", "doc tokens", "first answer s", "tokenize s", "encode+decode s",
                            "further q s", "further/first", "tokens/s (first)", "peak MB", "+MB over start", "total s",
                            "windows / note"], rows)
    lines = ["# longread reader speed", "",
             f"- device: {env['device_name']} ({env['device']}, {env['torch_threads']} torch threads, "
             f"{env['cpu_count']} CPUs, load average at start {env.get('load_average_at_start')}), "
             f"torch {env['torch_version']}, transformers {env['transformers_version']}, {env['date']}",
             f"- command: `{env['command']}`",
             f"- model: {result['model']['model']} ({result['model']['dtype']}, question_free_layers="
             f"{result['model']['encoder']['question_free_layers']})", "", table, ""]
    mem_kind = result["results"][0].get("peak_memory_kind", "") if result["results"] else ""
    lines.append(f"Peak memory: {mem_kind}, measured per system and length ('peak MB': CPU: the whole process's "
                 "RSS, every loaded model included; '+MB over start': above the memory in use when that run began). "
                 "tokens/s = document tokens / time to first answer. "
                 "hf-window and longformer have no document cache: every question costs the same. "
                 f"Before timing, each system answered one question on a "
                 f"{result['settings'].get('warm_up_tokens', 200):,}-token prefix of the text (warm-up).")
    hf_max = result["settings"].get("hf_max_tokens")
    if hf_max:
        lines.append(f"hf-window was run on lengths up to {hf_max:,} tokens only (--hf-max-tokens).")
    by = {(r["system"], r["length"]): r for r in result["results"] if "error" not in r}
    ratios = []
    for n in result["settings"]["lengths"]:
        hf, lr = by.get(("hf-window", n)), by.get(("longread", n))
        if hf and lr and hf["further_question_s"] and lr["further_question_s"]:
            ratios.append(f"{n:,} tokens: first answer {hf['first_question_s'] / lr['first_question_s']:.2f}x, "
                          f"further question {hf['further_question_s'] / lr['further_question_s']:.1f}x")
    if ratios:
        lines.append("")
        lines.append("hf-window time / longread time, side by side in this run: " + "; ".join(ratios) + ".")
    if "hf_conversion" in result:
        conv = result["hf_conversion"]
        lines.append("")
        lines.append(f"HF conversion check: max |logit diff| = {conv.get('max_abs_logit_diff', 'n/a')} "
                     f"(question_free_layers forced to 0, covering window) -> {'OK' if conv.get('ok') else 'FAILED'}")
        for note in conv.get("notes", []):
            lines.append(f"- {note}")
    if "longformer" in result:
        lines.append("")
        lf = result["longformer"]
        lines.append(f"Longformer peer: LongformerForQuestionAnswering with RANDOM weights (speed only, answers "
                     f"meaningless): hidden {lf['hidden_size']}, {lf['num_hidden_layers']} layers, "
                     f"{lf['num_attention_heads']} heads, attention_window {lf['attention_window']}, "
                     f"{lf['parameters']:,} parameters, run on lengths {lf['lengths']}.")
    tgt = result.get("cpu_target")
    if tgt:
        lines.append("")
        lines.append(f"CPU target (a {tgt['tokens']:,}-token document answered in <= {tgt['limit_s']} s): "
                     f"{tgt['verdict']}")
    return "\n".join(lines)


def cpu_target(result: dict, env: dict) -> Optional[dict]:
    if env["device"] != "cpu":
        return None
    rows = [r for r in result["results"] if r["system"] == "longread" and r["length"] == CPU_TARGET["tokens"]
            and "error" not in r]
    out = {"tokens": CPU_TARGET["tokens"], "limit_s": CPU_TARGET["seconds"], "cpu": env["cpu_model"],
           "torch_threads": env["torch_threads"], "cpu_count": env["cpu_count"],
           "load_average_at_start": env.get("load_average_at_start")}
    if not rows:
        out.update(seconds=None, passed=None, verdict=f"not measured (add {CPU_TARGET['tokens']} to --lengths)")
        return out
    secs = rows[0]["first_question_s"]
    out.update(seconds=secs, passed=secs <= CPU_TARGET["seconds"],
               further_question_s=rows[0]["further_question_s"])
    out["verdict"] = (f"{'PASS' if out['passed'] else 'FAIL'}: first answer in {secs:.2f} s "
                      f"(further questions {rows[0]['further_question_s'] or float('nan'):.2f} s) on "
                      f"{env['cpu_model']}, {env['torch_threads']} torch threads, load average "
                      f"{env.get('load_average_at_start')}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    reader = reader_from_args(args)
    device = reader.device
    lengths = ([int(x) for x in args.lengths.split(",") if x.strip()] if args.lengths
               else default_lengths(device, args.quick))
    lf_max = args.longformer_max_tokens or (100_000 if device.type == "cuda" else 20_000)
    env = environment(device, "eval/bench_reader.py", argv)
    result = {"environment": env, "model": reader_description(reader, args.model),
              "settings": {"lengths": lengths, "questions": args.questions, "systems": args.systems,
                           "max_seq_len": args.max_seq_len, "doc_stride": args.doc_stride,
                           "hf_batch_size": args.hf_batch_size, "longformer_max_tokens": lf_max,
                           "hf_max_tokens": args.hf_max_tokens,
                           "quick": args.quick, "covidqa": args.covidqa, "wiki": args.wiki},
              "results": []}

    tok = reader.tokenizer
    text, offsets, questions = build_corpus(args.covidqa, args.wiki, tok, max(lengths))
    questions = (questions * args.questions)[: args.questions]
    result["settings"]["question_texts"] = questions
    # warm-up: one question on a prefix as long as the shortest document (at most WARM_TOKENS), so that
    # no timed run pays the one-off cost of the first matmul and attention shapes (oneDNN primitives,
    # allocator growth) that only the first length measured would otherwise carry
    warm_tokens = min(min(lengths), WARM_TOKENS, len(offsets))
    result["settings"]["warm_up_tokens"] = warm_tokens
    warm_text = cut(text, offsets, warm_tokens)

    systems = {}
    if "longread" in args.systems:
        reader.answer(warm_text, question=questions[0])
        systems["longread"] = None
    if "hf-window" in args.systems:
        try:
            hf_model, notes = reader_to_hf_bert(reader)
            conv = check_hf_equivalence(reader, hf_model, cut(text, offsets, min(40, len(offsets))),
                                        questions[0])
            conv["notes"] = [f"transformers {env['transformers_version']} has no 'question-answering' pipeline "
                             "(removed in v5); its stride-window procedure is re-implemented on the HF tokenizer "
                             "and BertForQuestionAnswering"] + notes
            result["hf_conversion"] = conv
            hf_model = hf_model.to(device=device, dtype=reader.dtype)
            hf = HFWindowQA(hf_model, tok, device, args.max_seq_len, args.doc_stride,
                            reader.config.max_answer_tokens, args.hf_batch_size)
            hf.answer(questions[0], warm_text)
            systems["hf-window"] = hf
        except ValueError as exc:
            result["hf_conversion"] = {"ok": False, "notes": [f"hf-window skipped: {exc}"]}
    if "longformer" in args.systems:
        lf_lengths = [n for n in lengths if n <= lf_max]
        if lf_lengths:
            peer = LongformerPeer(tok, max(lf_lengths), device, reader.dtype, seed=args.seed,
                                  max_question_tokens=reader.config.layout.max_question_tokens)
            peer.answer(questions[0], warm_text)
            systems["longformer"] = peer
            result["longformer"] = {**peer.describe(), "lengths": lf_lengths,
                                    "note": "random weights: speed peer only, answers are meaningless"}

    limits = {"longformer": lf_max, "hf-window": args.hf_max_tokens or max(lengths)}
    total = sum(1 for n in lengths for s in systems if n <= limits.get(s, n))
    with tqdm(total=total, desc="bench", unit="run") as bar:
        for n in lengths:
            doc = cut(text, offsets, n)
            doc_tokens = n
            for name, impl in systems.items():
                if n > limits.get(name, n):
                    continue
                bar.set_postfix(system=name, tokens=n)
                try:
                    if name == "longread":
                        row = bench_longread(reader, doc, questions, n)
                        doc_tokens = row["doc_tokens"]
                    else:
                        row = bench_answerer(name, impl, doc, questions, n, doc_tokens, device)
                except (RuntimeError, MemoryError) as exc:    # torch.OutOfMemoryError is a RuntimeError
                    row = _error_row(name, n, exc)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                result["results"].append(row)
                bar.update(1)

    result["cpu_target"] = cpu_target(result, env)
    report(args.out, result, render_markdown(result))
    return result


if __name__ == "__main__":
    main()
