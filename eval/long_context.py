"""Long-context benchmark: RULER-style tasks x document lengths x systems, in one run.

Tasks (``eval/tasks.py``, generated from ``../shared/data``, deterministic by ``--seed``):
niah_single (depth x length grid), niah_multikey, niah_multivalue, qa_xquad (an XQuAD paragraph
among other paragraphs), covidqa (whole COVID-QA articles, as they are), multihop (the question's
key is linked in one place to a holder whose value is stated half the document away).

Systems, all on the same weights (the reader's; ``--model`` or the shipped default):

* ``longread``: the reader on ``--device``; ``longread-cpu``: the same on the CPU (only when
  ``--device`` is a GPU). Further questions on a document reuse its cached question-free layers.
  ``longread-all``: every chunk read. ``longread[option=value;...]``: the reader with those
  ReaderConfig options (e.g. ``longread[read_confidence=0]``, ``longread[read_summaries=None]``);
  such a variant reuses the document ``longread`` prepared (run both), so its first answer
  excludes the question-free encoding and the passage embeddings.
* ``reader-window``: the same stride-window recipe (384-token windows, stride 128, each window
  read alone, the most probable span over windows) with the reader's own forward and layout:
  the accuracy cost of windowing with nothing else changed.
* ``hf-window``: the Hugging Face stride-window QA recipe (384-token windows, stride 128) on a
  ``BertForQuestionAnswering`` holding the reader's weights (``bench_reader.HFWindowQA``).
* ``retrieve-read``: MiniLM sentence embeddings (``longread.retrieval.ChunkRetriever``) of the
  document's 256-token chunks (cached per document); the ``--top-chunks`` closest to the question
  are read, in document order, by the reader.
* ``longformer``: ``LongformerForQuestionAnswering`` with the reader's weights converted
  (``longread.checkpoints.to_hf_longformer``: positions extended by copying, window = the
  reader's), global attention on the question. It reads at most ``--longformer-max-tokens``
  (default 4096, Longformer's own limit): longer documents are truncated, as users of it do.

Per task, length and system: EM / F1 (SQuAD, best over the gold answers), hit (a gold answer is a
substring of the normalised prediction, as RULER scores), time to first answer (tokenize +
encode + read), time per further question on the same document, tokens/s (tokens read / time to
first answer) and peak memory (GPU: ``torch.cuda.max_memory_allocated`` over the document;
CPU: peak RSS of the process over the document, ``VmHWM`` reset per document, and its rise over
the RSS at the document's start, i.e. beside the models already loaded).

    python eval/long_context.py --quick                          # about a minute on a laptop CPU
    python eval/long_context.py --lengths 4096,16384,65536 --threads 1
    python eval/long_context.py --device cuda                    # + 128k, 256k, 1M tokens

Writes ``<out>/<name>.json``, ``<name>.md`` and ``<name>_{accuracy,depth,throughput}.png``
(default ``results/long_context/long_context.*``).
"""
from __future__ import annotations

import argparse
import ast
import math
import re
import sys
from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plots  # noqa: E402
import tasks as T  # noqa: E402
from _common import (DATA_DIR, PROJECT_ROOT, PeakMemory, Timer, environment, load_reader, load_squad,  # noqa: E402
                     load_wiki, markdown_table, reader_description, reader_from_args, write_outputs)
from bench_reader import HFWindowQA, check_hf_equivalence, reader_to_hf_bert  # noqa: E402

from longread.decoding import best_spans  # noqa: E402
from longread.errors import LongreadError  # noqa: E402
from longread.metrics import normalize_answer, text_em_f1  # noqa: E402

SYSTEMS = ("longread", "longread-all", "longread-cpu", "reader-window", "hf-window", "retrieve-read", "longformer")
VARIANT = re.compile(r"^longread\[(.+)\]$")     # longread[option=value;...]: ReaderConfig options
CPU_LENGTHS = (4096, 16384, 65536)
GPU_LENGTHS = (4096, 16384, 65536, 131072, 262144, 1048576)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
QUICK = {"lengths": (1024, 2048), "depths": (0.0, 0.5, 1.0), "docs": 1, "articles": 1}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: the shipped default reader)")
    p.add_argument("--lengths", default=None, help="comma-separated lengths in tokens (default 4096,16384,65536 "
                   "on CPU; + 131072,262144,1048576 on GPU; --quick: 1024,2048)")
    p.add_argument("--tasks", default=",".join(T.TASKS), help=f"subset of {','.join(T.TASKS)}")
    p.add_argument("--systems", default="longread,reader-window,hf-window,retrieve-read,longformer",
                   help=f"subset of {','.join(SYSTEMS)}")
    p.add_argument("--depths", default=None,
                   help="needle depths in [0, 1] (default 0,0.25,0.5,0.75,1; --quick: 0,0.5,1)")
    p.add_argument("--docs", type=int, default=None,
                   help="documents per task and length (niah_single: per depth; covidqa: articles) (default 2)")
    p.add_argument("--questions", type=int, default=2, help="questions per qa_xquad / covidqa document")
    p.add_argument("--questions-per-cell", type=int, default=None,
                   help="documents per task and length so that every cell has at least this many questions "
                        "(overrides --docs; niah_single: per depth, rounded up)")
    p.add_argument("--top-chunks", type=int, default=4, help="retrieve-read: chunks read per question")
    p.add_argument("--longformer-max-tokens", type=int, default=4096,
                   help="longformer: longest input (question included); longer documents are truncated")
    p.add_argument("--data-dir", default=str(DATA_DIR), help="folder with wiki/, xquad/, covidqa/")
    p.add_argument("--source", choices=("local", "hub"), default="local",
                   help="hub: Wikipedia, XQuAD and COVID-QA from the Hugging Face hub (needs internet) "
                        "instead of --data-dir")
    p.add_argument("--hub-wiki-articles", type=int, default=3000, help="--source hub: Wikipedia articles to use")
    p.add_argument("--quick", action="store_true", help="lengths 1024,2048, depths 0,0.5,1, one document each")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (the reader's default), float32, bfloat16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PROJECT_ROOT / "results" / "long_context"), help="output folder")
    p.add_argument("--name", default="long_context", help="file name stem of the outputs")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for name in args.systems:
        if VARIANT.match(name):
            try:
                variant_options(name)
            except (ValueError, SyntaxError, LongreadError) as e:
                p.error(f"--systems {name}: {e}")
            if "longread" not in args.systems:
                p.error(f"--systems {name} reuses the documents longread prepares: add longread")
    for kind, given, known in (("tasks", args.tasks, T.TASKS), ("systems", args.systems, SYSTEMS)):
        bad = sorted(g for g in set(given) - set(known) if not (kind == "systems" and VARIANT.match(g)))
        if bad or not given:
            p.error(f"unknown or empty --{kind} {bad}; choose from {', '.join(known)}")
    args.depths = ([float(x) for x in args.depths.split(",")] if args.depths
                   else list(QUICK["depths"] if args.quick else DEPTHS))
    if any(not 0.0 <= d <= 1.0 for d in args.depths):
        p.error("--depths must lie in [0, 1]")
    if args.docs is None:
        args.docs = QUICK["docs"] if args.quick else 2
    if args.lengths:
        args.lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
        if any(n < 256 for n in args.lengths):
            p.error("--lengths must be at least 256 tokens")
    return args


def docs_for_questions(task: str, questions: int, depths: int, per_doc: int) -> int:
    """Documents per (task, length) that give at least ``questions`` questions: niah_single asks
    one per document and makes one per depth; niah_multikey asks each of its 4 keys;
    niah_multivalue one; qa_xquad and covidqa up to ``per_doc``."""
    asked = {"niah_single": depths, "niah_multikey": 4, "niah_multivalue": 1, "multihop": 4}.get(task, per_doc)
    return -(-questions // asked)


def variant_options(name: str) -> dict:
    """``longread[a=1;b=None]`` -> {"a": 1, "b": None}, checked against ReaderConfig's fields."""
    from longread.reader import ReaderConfig

    known = {f.name for f in fields(ReaderConfig)}
    options = {}
    for item in VARIANT.match(name).group(1).split(";"):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in known:
            raise ValueError(f"{item!r} is not option=value with a ReaderConfig option ({', '.join(sorted(known))})")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value                               # a bare word: a string option
    replace(ReaderConfig(), **options)                         # the reader's own checks
    return options


# ----------------------------------------------------------------------------- systems
class LongreadSystem:
    """The reader: a document is prepared once; its question-free encoding is cached.
    ``read``: "auto" (coarse to fine: the chunks ranked most relevant) or "all" (every chunk)."""

    def __init__(self, reader, read: str = "auto", shared: bool = False, **options):
        self.reader, self.device, self.read, self.options = reader, reader.device, read, options
        self.shared = shared                  # reuse the document another system prepared

    def open(self, text: str):
        if not self.shared:
            self.reader._cache.clear()        # every document starts uncached
        return self.reader.prepare(text)

    def ask(self, state, question: str) -> dict:
        config = self.reader.config
        self.reader.config = replace(config, **self.options)
        try:
            a = self.reader.answer(state, question=question, read=self.read)
        finally:
            self.reader.config = config
        starts = state.tokens.chunk_starts
        read = sum(int(starts[c + 1] - starts[c]) for c in a.chunks_read)
        return {"text": a.text, "start": a.start, "end": a.end, "tokens_read": read,
                "tokens_encoded": state.num_tokens}

    def close(self) -> None:
        pass                                  # the next document's open() clears the cache


class WindowSystem:
    """HF stride windows (no document cache: every question reads the whole document)."""

    def __init__(self, window_qa: HFWindowQA, device):
        self.qa, self.device = window_qa, device

    def open(self, text: str):
        return text

    def ask(self, text, question: str) -> dict:
        return self.qa.answer(question, text)

    def close(self) -> None:
        pass


class ReaderWindows:
    """The stride-window recipe with the reader's own forward: windows of ``max_seq_len`` tokens
    (question included) overlapping by ``doc_stride``, each read alone (its own softmax), the most
    probable span over all windows. Same model and input layout as ``longread``: what changes is
    only that no window sees the rest of the document."""

    def __init__(self, reader, max_seq_len: int = 384, doc_stride: int = 128):
        self.reader, self.device = reader, reader.device
        self.max_seq_len, self.doc_stride = max_seq_len, doc_stride

    def open(self, text: str):
        enc = self.reader.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return {"text": text, "offsets": enc["offset_mapping"]}

    def ask(self, state, question: str) -> dict:
        from longread.layout import question_inputs

        text, offsets = state["text"], state["offsets"]
        lq = question_inputs(question, self.reader.tokenizer, self.reader.config.layout).input_ids.shape[1]
        width = max(16, self.max_seq_len - lq - 1)
        step = max(1, width - self.doc_stride)
        best = None
        for w0 in range(0, max(1, len(offsets) - self.doc_stride), step):
            w1 = min(len(offsets), w0 + width)
            c0, c1 = offsets[w0][0], offsets[w1 - 1][1]
            a = self.reader.answer(text[c0:c1], question=question, top_k=1)
            if best is None or a.score > best[0]:
                best = (a.score, c0 + a.start, c0 + a.end)
            if w1 == len(offsets):
                break
        self.reader._cache.clear()
        return {"text": text[best[1]:best[2]], "start": best[1], "end": best[2]}

    def close(self) -> None:
        self.reader._cache.clear()


class RetrieveRead:
    """Chunk embeddings (cached per document) pick ``top`` chunks; the reader reads those only."""

    def __init__(self, reader, retriever, top: int):
        from longread.layout import LayoutConfig

        self.reader, self.retriever, self.top, self.device = reader, retriever, top, reader.device
        self.layout = LayoutConfig(chunk_size=256)

    def open(self, text: str):
        from longread.layout import tokenize_document

        toks = tokenize_document(text, self.reader.tokenizer, self.layout)
        bounds = toks.chunk_starts
        spans = [(int(toks.offsets[a, 0]), int(toks.offsets[b - 1, 1])) for a, b in zip(bounds[:-1], bounds[1:])]
        return {"text": text, "spans": spans, "emb": self.retriever.embed([text[a:b] for a, b in spans])}

    def ask(self, state, question: str) -> dict:
        cos = self.retriever.scores(question, state["emb"])                      # (chunks,)
        picked = sorted(torch.topk(cos, min(self.top, len(cos))).indices.tolist())
        parts, starts, pos = [], [], 0
        for c in picked:
            a, b = state["spans"][c]
            starts.append(pos)
            parts.append(state["text"][a:b])
            pos += b - a + len(T.PARAGRAPH)
        ans = self.reader.answer(T.PARAGRAPH.join(parts), question=question)
        self.reader._cache.clear()
        k = max(i for i, s in enumerate(starts) if s <= ans.start)               # the chunk the span starts in
        a, b = state["spans"][picked[k]]
        start = a + ans.start - starts[k]
        end = min(b, a + ans.end - starts[k])                                   # a span never crosses chunks
        return {"text": state["text"][start:end], "start": start, "end": end}

    def close(self) -> None:
        self.reader._cache.clear()


class LongformerSystem:
    """``LongformerForQuestionAnswering`` on ``[CLS] question [SEP] document [SEP]`` (consecutive
    positions, global attention on the question, document truncated to fit ``max_tokens``)."""

    def __init__(self, reader, max_tokens: int, device):
        from longread.checkpoints import to_hf_longformer

        self.tok, self.device, self.max_tokens = reader.tokenizer, device, max_tokens
        self.layout, self.max_answer = reader.config.layout, reader.config.max_answer_tokens
        self.model = to_hf_longformer(reader.model, max_tokens).to(device=device, dtype=reader.dtype)

    def open(self, text: str):
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return {"text": text, "ids": enc["input_ids"], "offsets": enc["offset_mapping"]}

    @torch.inference_mode()
    def ask(self, state, question: str) -> dict:
        from longread.layout import question_inputs

        q = question_inputs(question, self.tok, self.layout).input_ids[0].tolist()   # [CLS] q [SEP]
        d = state["ids"][: self.max_tokens - len(q) - 1]
        ids = torch.tensor([q + d + [self.tok.sep_token_id]], device=self.device)
        types = torch.zeros_like(ids)
        types[:, len(q):] = 1
        glob = torch.zeros_like(ids)
        glob[:, :len(q)] = 1
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob,
                         token_type_ids=types)
        lq = len(q)
        span = best_spans(out.start_logits[0, lq:lq + len(d)].float(), out.end_logits[0, lq:lq + len(d)].float(),
                          top_k=1, max_answer_tokens=self.max_answer)[0]
        start, end = state["offsets"][span.start][0], state["offsets"][span.end][1]
        return {"text": state["text"][start:end], "start": start, "end": end, "tokens_read": len(d)}

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- measurement
def hit(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a (normalised, non-empty) gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any(g and g in pred for g in (normalize_answer(x) for x in golds)))


def run_sample(name: str, system, sample: T.Sample) -> List[dict]:
    """Ask every question of ``sample``; one record per question (the first pays for the document)."""
    records = []
    with PeakMemory(system.device) as mem:
        with Timer(system.device) as t_open:
            state = system.open(sample.text)
        open_s = t_open.seconds
        for i, qa in enumerate(sample.qas):
            with Timer(system.device) as t:
                pred = system.ask(state, qa.question)
            assert sample.text[pred["start"]:pred["end"]] == pred["text"]
            em, f1 = text_em_f1(pred["text"], qa.answers)
            records.append({"system": name, "task": sample.task, "length": sample.length, "doc": sample.doc_id,
                            "doc_tokens": sample.num_tokens, "question": qa.question, "answers": qa.answers[:4],
                            "prediction": pred["text"][:200], "em": em, "f1": f1, "hit": hit(pred["text"], qa.answers),
                            "depth": qa.depth, "token_depth": qa.token_depth, "first": i == 0,
                            "seconds": t.seconds + (open_s if i == 0 else 0.0),
                            "tokens_read": pred.get("tokens_read", sample.num_tokens),
                            # tokens the first answer processed (coarse to fine: the whole document
                            # through the question-free layers, a few chunks through the rest)
                            "tokens_encoded": pred.get("tokens_encoded", pred.get("tokens_read", sample.num_tokens))})
    system.close()
    for r in records:
        r.update(peak_memory_mb=mem.peak_mb, peak_memory_over_start_mb=mem.extra_mb)
    return records


def wilson_interval(successes: float, n: int, z: float = 1.96) -> List[float]:
    """95% Wilson score interval of a proportion, in percent."""
    if n == 0:
        return [0.0, 100.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def mean_interval(values: Sequence[float], z: float = 1.96) -> List[float]:
    """Normal-approximation 95% interval of a mean (of per-question F1)."""
    v = np.asarray(values, dtype=np.float64)
    half = z * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("inf")
    return [float(v.mean()) - half, float(v.mean()) + half]


def summarize(records: List[dict]) -> List[dict]:
    """One row per (task, length, system)."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["length"], r["system"])].append(r)
    rows = []
    for (task, length, system), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        row = {"task": task, "length": length, "system": system, "questions": len(ok),
               "documents": len({r["doc"] for r in rs}), "errors": len(rs) - len(ok)}
        if ok:
            first = [r for r in ok if r["first"]]
            further = [r["seconds"] for r in ok if not r["first"]]
            row.update(
                doc_tokens=float(np.mean([r["doc_tokens"] for r in ok])),
                tokens_read=float(np.mean([r["tokens_read"] for r in ok])),
                em=100 * float(np.mean([r["em"] for r in ok])), f1=100 * float(np.mean([r["f1"] for r in ok])),
                hit=100 * float(np.mean([r["hit"] for r in ok])),
                hit_ci=wilson_interval(sum(r["hit"] for r in ok), len(ok)),
                f1_ci=mean_interval([100 * r["f1"] for r in ok]),
                first_answer_s=float(np.mean([r["seconds"] for r in first])),
                further_question_s=float(np.mean(further)) if further else None,
                # a variant's first question finds the document encoded already: no tokens/s of its own
                tokens_per_s=(None if VARIANT.match(system)
                              else float(np.mean([r["tokens_encoded"] / r["seconds"] for r in first]))),
                peak_memory_mb=float(max(r["peak_memory_mb"] for r in ok)),
                peak_memory_over_start_mb=float(max(r["peak_memory_over_start_mb"] for r in ok)))
        else:
            row["error"] = rs[0]["error"]
        rows.append(row)
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return sorted(rows, key=lambda r: (T.TASKS.index(r["task"]), r["length"], order.get(r["system"], 0.5),
                                       r["system"]))


def targets(rows: List[dict]) -> dict:
    """The reader's accuracy drop from the shortest to the longest length (per task, in hit
    points) and the exponent of its time to first answer in the length (log-log fit)."""
    out = {}
    for system in ("longread", "longread-cpu"):
        mine = [r for r in rows if r["system"] == system and r["length"] > 0 and "hit" in r]
        if not mine:
            continue
        drops = {}
        for task in T.TASKS:
            rs = sorted((r for r in mine if r["task"] == task), key=lambda r: r["length"])
            if len(rs) >= 2:
                drops[task] = {"from": rs[0]["length"], "to": rs[-1]["length"], "hit_from": rs[0]["hit"],
                               "hit_to": rs[-1]["hit"], "drop": rs[0]["hit"] - rs[-1]["hit"],
                               "within_5_points": rs[0]["hit"] - rs[-1]["hit"] <= 5.0}
        pts = [(math.log(r["doc_tokens"]), math.log(r["first_answer_s"])) for r in mine]
        slope = float(np.polyfit(*zip(*pts), 1)[0]) if len({p[0] for p in pts}) >= 2 else None
        out[system] = {"accuracy_drop": drops, "time_vs_length_exponent": slope}
    return out


# ----------------------------------------------------------------------------- report
def _interval(ci) -> str:
    return "" if not ci else f"{ci[0]:.0f}-{ci[1]:.0f}"


def _note(system: str) -> str:
    return "first answer on longread's encoded document" if VARIANT.match(system) else ""


def render_markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    rows = [[r["task"], r["length"] or "article", r["system"], r["questions"], r.get("doc_tokens"),
             r.get("tokens_read"),
             r.get("em"), r.get("f1"), r.get("hit"), _interval(r.get("hit_ci")), r.get("first_answer_s"),
             r.get("further_question_s"),
             r.get("tokens_per_s"), r.get("peak_memory_mb"), r.get("peak_memory_over_start_mb"),
             r.get("error", "")[:60] or _note(r["system"])] for r in result["rows"]]
    table = markdown_table(["task", "length", "system", "questions", "doc tokens", "tokens read", "EM", "F1", "hit %",
                            "hit 95% CI", "first answer s", "further q s", "tokens/s", "peak MB", "+MB over start",
                            "note"], rows)
    systems = s["systems"]
    pivot_rows = []
    for task in s["tasks"]:
        for length in sorted({r["length"] for r in result["rows"] if r["task"] == task}):
            got = {r["system"]: (f"{r['hit']:.0f} [{_interval(r.get('hit_ci'))}] n={r['questions']}" if "hit" in r
                                 else None)
                   for r in result["rows"] if r["task"] == task and r["length"] == length}
            pivot_rows.append([task, length or "article", *[got.get(x) for x in systems]])
    pivot = markdown_table(["task", "length", *[f"{x} hit % [95% CI] n" for x in systems]], pivot_rows)
    missing = [n for n in GPU_LENGTHS if n not in s["lengths"]]
    lines = [
        "# Long-context benchmark", "",
        f"- device: {env['device_name']} ({env['device']}, {env['torch_threads']} torch threads, {env['cpu_count']} "
        f"CPUs, load average at start {env.get('load_average_at_start')}), torch {env['torch_version']}, "
        f"transformers {env['transformers_version']}, {env['date']}",
        f"- command: `{env['command']}`",
        f"- model: {result['model']['model']} ({result['model']['dtype']})",
        f"- lengths {s['lengths']}, depths {s['depths']}, "
        + (f"at least {s['questions_per_cell']} questions per task and length, " if s.get("questions_per_cell")
           else f"{s['docs']} document(s) per task and length, ") +
        f"seed {s['seed']}",
        "", "## Accuracy (hit %) by length", "", pivot, "", "## All measurements", "", table, "",
        "hit = a gold answer is a substring of the normalised prediction (RULER's string match); EM/F1: SQuAD. "
        "first answer = open the document (tokenize, and for retrieve-read embed its chunks) + read + decode; "
        "further q = each later question on the same document. tokens/s = document tokens / first answer time "
        "(tokens read: what the question-aware layers read; longread reads every token in its question-free "
        "layers). hit 95% CI: Wilson interval over the questions of the cell. "
        f"Peak memory: {result['memory_kind']}; '+MB over start' = rise over the memory in use when the document "
        "began (the models already loaded are not counted).",
        f"longformer reads at most {s['longformer_max_tokens']} tokens (question included): longer documents are "
        "truncated. hf-window and longformer have no document cache (every question costs the same).",
    ]
    qfl = result["model"]["encoder"].get("question_free_layers", 0)
    if qfl and ({"hf-window", "longformer"} & set(systems)):
        lines.append(f"hf-window and longformer run every layer on question + text together: they cannot express "
                     f"this reader's question_free_layers={qfl}, its chunk summaries or its position layout, so "
                     "their answers come from the same weights used differently (the conversions are exact for "
                     "a reader with question_free_layers=0: tests/test_long_context.py). reader-window is the "
                     "windowing baseline with the reader's own forward.")
    if missing:
        lines.append(f"Not measured in this run: lengths {missing}" +
                     ("" if env["device"].startswith("cuda") else " and the GPU path") + ".")
    for system, t in result["targets"].items():
        drops = "; ".join(f"{task}: {d['hit_from']:.0f} -> {d['hit_to']:.0f} ({d['from']:,} -> {d['to']:,} tokens)"
                          for task, d in t["accuracy_drop"].items())
        exp = t["time_vs_length_exponent"]
        growth = f" Time to first answer grows as length^{exp:.2f} (log-log fit)." if exp is not None else ""
        lines.append(f"Target ({system}): hit % from shortest to longest length: {drops or 'n/a'}.{growth}")
    if result.get("hf_conversion"):
        lines.append(f"hf-window weights check: max |logit diff| vs longread = "
                     f"{result['hf_conversion'].get('max_abs_logit_diff', 'n/a')}")
    lines.append("")
    lines += [f"![{k}]({Path(v).name})" for k, v in result.get("plots", {}).items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
HUB = {"wiki": ("wikimedia/wikipedia", "20231101.en", "train"), "xquad": ("google/xquad", "xquad.en", "validation"),
       "covidqa": ("deepset/covid_qa_deepset", None, "train")}


def load_hub_data(task_names: Sequence[str], wiki_articles: int) -> dict:
    """The same data from the Hugging Face hub (``datasets``; streamed Wikipedia articles)."""
    import itertools

    from datasets import load_dataset

    name, config, split = HUB["wiki"]
    stream = load_dataset(name, config, split=split, streaming=True)
    wiki = [(r["title"], r["text"]) for r in itertools.islice(stream, wiki_articles)]
    out = {"wiki": wiki, "xquad": [], "covidqa": [], "paths": {k: "hub:" + v[0] for k, v in HUB.items()}}
    for key, task, title in (("xquad", "qa_xquad", None), ("covidqa", "covidqa", "document_id")):
        if task in task_names:
            name, config, split = HUB[key]
            out[key] = T.squad_rows_to_documents(load_dataset(name, config, split=split), title)
    return out


def load_data(data_dir: Path, task_names: Sequence[str]) -> dict:
    data_dir = Path(data_dir)
    paths = {"wiki": data_dir / "wiki" / "summaries_en.json", "xquad": data_dir / "xquad" / "xquad.en.json",
             "covidqa": data_dir / "covidqa" / "dev.json"}
    need = {"wiki"} | {key for task, key in (("qa_xquad", "xquad"), ("covidqa", "covidqa")) if task in task_names}
    for key in need:
        if not paths[key].exists():
            raise SystemExit(f"{paths[key]} not found: pass --data-dir (a folder with wiki/, xquad/, covidqa/)")
    wiki = [(t, v.get("extract") or "") for t, v in load_wiki(paths["wiki"]).items()]
    return {"wiki": wiki, "xquad": load_squad(paths["xquad"]) if "xquad" in need else [],
            "covidqa": load_squad(paths["covidqa"]) if "covidqa" in need else [],
            "paths": {k: str(v) for k, v in paths.items()}}


def build_systems(args, reader, samples, result) -> dict:
    systems = {}
    if "longread" in args.systems:
        systems["longread"] = LongreadSystem(reader)
    if "longread-all" in args.systems:
        systems["longread-all"] = LongreadSystem(reader, read="all")
    for name in args.systems:
        if VARIANT.match(name):
            systems[name] = LongreadSystem(reader, shared=True, **variant_options(name))
    if "longread-cpu" in args.systems and reader.device.type != "cpu":
        systems["longread-cpu"] = LongreadSystem(load_reader(args.model, device="cpu"))
    if "reader-window" in args.systems:
        systems["reader-window"] = ReaderWindows(reader)
    if "hf-window" in args.systems:
        hf, notes = reader_to_hf_bert(reader)
        short = samples[0].text[:200]
        result["hf_conversion"] = {**check_hf_equivalence(reader, hf, short[: short.rfind(" ")] or short,
                                                          samples[0].qas[0].question), "notes": notes}
        hf = hf.to(device=reader.device, dtype=reader.dtype)
        systems["hf-window"] = WindowSystem(HFWindowQA(hf, reader.tokenizer, reader.device,
                                                       max_answer_len=reader.config.max_answer_tokens), reader.device)
    if "retrieve-read" in args.systems:        # the reader's own retriever: one copy of MiniLM in memory
        systems["retrieve-read"] = RetrieveRead(reader, reader.retriever, args.top_chunks)
    if "longformer" in args.systems:
        systems["longformer"] = LongformerSystem(reader, args.longformer_max_tokens, reader.device)
    return systems


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    reader = reader_from_args(args)
    device = reader.device
    lengths = args.lengths or list(QUICK["lengths"] if args.quick else
                                   GPU_LENGTHS if device.type == "cuda" else CPU_LENGTHS)
    data = (load_hub_data(args.tasks, args.hub_wiki_articles) if args.source == "hub"
            else load_data(args.data_dir, args.tasks))
    tokens = T.Tokens(reader.tokenizer)
    samples: List[T.Sample] = []
    for task in tqdm(args.tasks, desc="building tasks", unit="task"):
        per = QUICK["articles"] if (task == "covidqa" and args.quick) else args.docs
        if args.questions_per_cell:
            per = docs_for_questions(task, args.questions_per_cell, len(args.depths), args.questions)
        samples += T.build_samples(task, lengths, args.depths, per, tokens, data["wiki"], data["xquad"],
                                   data["covidqa"], seed=args.seed, max_questions=args.questions)
    env = environment(device, "eval/long_context.py", argv)
    result = {"environment": env, "model": reader_description(reader, args.model),
              "settings": {"lengths": lengths, "tasks": args.tasks, "systems": args.systems, "depths": args.depths,
                           "docs": args.docs, "questions": args.questions,
                           "questions_per_cell": args.questions_per_cell, "top_chunks": args.top_chunks,
                           "longformer_max_tokens": args.longformer_max_tokens, "quick": args.quick,
                           "seed": args.seed, "data": data["paths"]},
              "memory_kind": ("torch.cuda.max_memory_allocated over each document" if device.type == "cuda" else
                              "peak RSS of the process over each document (VmHWM, reset per document)")}
    systems = build_systems(args, reader, samples, result)
    warm = samples[0]
    for system in systems.values():                       # first-call costs are not measured
        system.ask(system.open(warm.text[:2000]), warm.qas[0].question)
        system.close()

    records = []
    with tqdm(total=len(samples) * len(systems), desc="long-context", unit="doc") as bar:
        for sample in samples:
            for name, system in systems.items():
                bar.set_postfix(task=sample.task, tokens=sample.num_tokens, system=name)
                try:
                    records += run_sample(name, system, sample)
                except (RuntimeError, MemoryError, LongreadError) as exc:     # out of memory included
                    records.append({"system": name, "task": sample.task, "length": sample.length,
                                    "doc": sample.doc_id, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    system.close()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                bar.update(1)
    result["rows"] = summarize(records)
    result["targets"] = targets(result["rows"])
    out = Path(args.out)
    result["plots"] = plots.make_all(result["rows"], records, out, args.name)
    result["records"] = records
    write_outputs(out / f"{args.name}.json", result, render_markdown(result))
    print(render_markdown(result))
    print(f"\nwrote {out / (args.name + '.json')}, {args.name}.md and {len(result['plots'])} plots in {out}")
    return result


if __name__ == "__main__":
    main()
