"""Train the image fusion (gated cross-attention + patch encoder) on generated grounding examples.

The reader's own weights stay frozen; only the fusion layers and the PatchEncoder learn, from
"visual" examples of ``longread.training.grounding_data`` (whose crate is in the picture?).
Two stages:

1. alignment (``--align-steps``, ``longread.training.align_vision``): the PatchEncoder's patches
   are pulled towards the reader's own question-free states of the crate's mark ("red triangle");
2. fusion, with the gold span loss on the pictured crate's owner, either
   * ``--cached N`` (the working recipe): one fusion layer after the last layer with the bilinear
     match sub-block (``--ffn --context K``), trained on N cached documents
     (``longread.training.fusion_cache``), or
   * full reader passes for fusion layers anywhere, optionally distilled from the text-only
     reader asked "Who owns the crate with the red triangle?" (``--distill`` x KL(teacher ||
     student) over the start/end distributions), with a curriculum: 1 image at the shortest
     length first, then 1..``--max-images`` images (the others grey textures) at every
     ``--tokens`` length.

Writes ``fusion.safetensors`` and ``train_vision.json`` (settings, losses, held-out accuracy with
images / images removed / gate 0 / the text question, chance)::

    python -m longread.training.train_vision --out results/vision --layers 5 --ffn --context 12 \
        --align-steps 2000 --cached 400 --max-images 3 --steps 1000000 --max-minutes 24
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import question_inputs
from ..reader import Reader
from ..vision.fusion import attach_fusion, closed_gates, image_context, save_fusion
from ..vision.patch_encoder import PatchEncoder, PatchEncoderConfig
from .align_vision import align, attribute_classes, retrieval_accuracy, text_targets
from .fusion_cache import cache_documents, cached_loss
from .grounding_data import make_visual


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="reader checkpoint (default: the offline default reader)")
    p.add_argument("--out", default="results/vision")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--max-minutes", type=float, default=10.0)
    p.add_argument("--entities", type=int, default=4, help="crates described per document")
    p.add_argument("--tokens", default="256", help="comma-separated document lengths of training examples")
    p.add_argument("--max-images", type=int, default=1, help="images per training document after the warm-up")
    p.add_argument("--warmup", type=float, default=0.3, help="share of the run with 1 image at the shortest length")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vision-lr", type=float, default=None, help="learning rate of the PatchEncoder (default: --lr)")
    p.add_argument("--gate-lr", type=float, default=1e-2, help="learning rate of the tanh gates")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=200,
                   help="linear learning-rate warm-up, then cosine decay to 0 at --steps")
    p.add_argument("--distill", type=float, default=0.0, help="weight of KL(text-question teacher || student)")
    p.add_argument("--align-steps", type=int, default=0, help="PatchEncoder alignment steps before fusion training")
    p.add_argument("--align-lr", type=float, default=2e-3)
    p.add_argument("--align-temperature", type=float, default=0.03)
    p.add_argument("--layers", default=None, help="comma-separated layers followed by a fusion layer "
                   "(default: every question-aware layer; the last question-free layer is allowed)")
    p.add_argument("--ffn", action="store_true", help="fusion layers with the gated FFN sub-block")
    p.add_argument("--context", type=int, default=0, help="preceding rows the FFN reads (with --ffn)")
    p.add_argument("--layout", default="scattered", choices=["scattered", "figure"],
                   help="grounding document layout (see grounding_data.make_visual)")
    p.add_argument("--cached", type=int, default=0,
                   help="train on this many cached documents (fusion after the last layer only; "
                        "see longread.training.fusion_cache); 0: full reader passes")
    p.add_argument("--eval-examples", type=int, default=60)
    p.add_argument("--eval-images", type=int, default=1, help="images per held-out document")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def answer_tokens(prepared, text: str, answer: str):
    """(start, end) token indices of the fact's owner name in the reading text."""
    pos = text.index(f"belongs to {answer}.") + len("belongs to ")
    offsets = prepared.tokens.offsets
    start = int(np.searchsorted(offsets[:, 0], pos))
    end = int(np.searchsorted(offsets[:, 1], pos + len(answer), side="left"))
    return start, end


def span_logits(reader, prepared, question: str, images: bool = True, doc_states=None):
    """Start/end logits (n,) over document tokens; with ``images`` gradients reach the fusion and
    vision tower. ``doc_states``: the document's question-free states (B, n, hidden), if known."""
    m, d = reader.model, prepared.inputs
    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    with torch.no_grad():                               # frozen, question-free part
        xq = m.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        xd = m.encode_document(d.input_ids, d.position_ids, d.token_type_ids) if doc_states is None else doc_states
    out = m.read(xq, xd, d.chunk_ids, d.num_chunks, image_context=image_context(m, prepared) if images else None)
    lq = q.input_ids.shape[1]
    return out.start_logits[0, lq:], out.end_logits[0, lq:]


def distill_loss(student, teacher) -> torch.Tensor:
    """Sum over start and end of KL(softmax(teacher) || softmax(student)); each a pair of (n,) logits."""
    return sum(F.kl_div(F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1), log_target=True,
                        reduction="sum") for s, t in zip(student, teacher))


def text_question(ex) -> str:
    """The text-only question that names the pictured crate's mark (the teacher's question)."""
    return f"Who owns the crate with the {ex.attribute}?"


def curriculum(rng, progress: float, args):
    """(images, tokens) of the next training document: 1 image at the shortest length during the
    warm-up share of the run, then uniform over 1..max_images and the --tokens lengths."""
    lengths = [int(x) for x in str(args.tokens).split(",")]
    if progress < args.warmup:
        return 1, min(lengths)
    return rng.randint(1, args.max_images), rng.choice(lengths)


@torch.no_grad()
def accuracy(reader, examples, mode: str) -> float:
    """Exact-match accuracy; mode: "images", "no images", "gate 0" or "text question" (the text-only
    reader asked about the named mark, no images: the reference the fusion is distilled from)."""
    with closed_gates(reader.model) if mode == "gate 0" else nullcontext():
        hits = 0
        for ex in examples:
            if mode == "text question":
                a = reader.answer(ex.text, text_question(ex))
            else:
                a = reader.answer(ex.text, ex.question, images=None if mode == "no images" else ex.images)
            hits += a.text.strip(" .").lower() == ex.answer.lower()
        return hits / len(examples)


def make_optimizer(model, lr: float, gate_lr: float, vision_lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW over the fusion (gates at ``gate_lr``, the rest at ``lr``) and the vision tower
    (``vision_lr``); marks exactly those parameters trainable. Gates are not decayed."""
    for p in list(model.fusion.parameters()) + list(model.vision.parameters()):
        p.requires_grad_(True)
    gates = [p for n, p in model.fusion.named_parameters() if n.endswith("gate")]        # attention and FFN gates
    rest = [p for n, p in model.fusion.named_parameters() if not n.endswith("gate")]
    return torch.optim.AdamW([{"params": rest, "lr": lr, "weight_decay": weight_decay},
                              {"params": gates, "lr": gate_lr, "weight_decay": 0.0},
                              {"params": list(model.vision.parameters()), "lr": vision_lr,
                               "weight_decay": weight_decay}])


def build(args):
    """The frozen reader with fusion + PatchEncoder attached; optimiser over the trainable part."""
    reader = Reader.from_pretrained(args.model, device="cpu", dtype=torch.float32, ocr=False)
    model = reader.model
    model.requires_grad_(False)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    attach_fusion(model, layers, vision=PatchEncoder(PatchEncoderConfig(out_dim=model.config.hidden_size)),
                  ffn=args.ffn, context=args.context)
    return reader, make_optimizer(model, args.lr, args.gate_lr, args.vision_lr or args.lr, args.weight_decay)


def train_step(reader, opt, ex, distill: float):
    """One step on one example (a full reader pass); returns (gold span loss, distillation loss,
    whether the gold owner's start logit is the highest among the candidate owners')."""
    prepared = reader.prepare(ex.text, ex.images)
    s, e = answer_tokens(prepared, prepared.document.text, ex.answer)
    m, d = reader.model, prepared.inputs
    with torch.no_grad():
        xd = m.encode_document(d.input_ids, d.position_ids, d.token_type_ids)
    student = span_logits(reader, prepared, ex.question, doc_states=xd)
    gold = F.cross_entropy(student[0][None], torch.tensor([s])) + F.cross_entropy(student[1][None], torch.tensor([e]))
    kl = torch.zeros(())
    if distill:
        with torch.no_grad():
            teacher = span_logits(reader, prepared, text_question(ex), images=False, doc_states=xd)
        kl = distill_loss(student, teacher)
    loss = gold + distill * kl
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    starts = [answer_tokens(prepared, prepared.document.text, name)[0] for name in ex.candidates]
    return gold.item(), kl.item(), int(student[0][starts].argmax()) == starts.index(s)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, eval_rng = random.Random(args.seed), random.Random(10_000 + args.seed)
    reader, opt = build(args)
    model = reader.model
    t0 = time.time()
    align_record = None
    if args.align_steps:
        classes = attribute_classes()
        targets = text_targets(reader, classes)
        align_losses = align(model.vision, targets, classes, random.Random(args.seed + 1), steps=args.align_steps,
                             lr=args.align_lr, temperature=args.align_temperature, log_every=250)
        align_record = {"steps": args.align_steps, "loss_first_50": float(np.mean(align_losses[:50])),
                        "loss_last_50": float(np.mean(align_losses[-50:])),
                        "minutes": round((time.time() - t0) / 60, 2),
                        "held_out_retrieval_accuracy": retrieval_accuracy(
                            model.vision, targets, classes, random.Random(args.seed + 2), 500, args.align_temperature)}
        print("alignment", json.dumps(align_record), flush=True)
    eval_tokens = min(int(x) for x in str(args.tokens).split(","))
    held_out = [make_visual(eval_rng, args.entities, args.eval_images, eval_tokens, layout=args.layout)
                for _ in range(args.eval_examples)]

    t1, gold_losses, kl_losses, hits, step = time.time(), [], [], [], 0
    budget = args.max_minutes * 60
    docs = []
    if args.cached:
        last = str(len(model.layers) - 1)
        if list(model.fusion) != [last]:
            raise SystemExit(f"--cached trains one fusion layer after the last layer: use --layers {last}")
        docs = cache_documents(reader, random.Random(args.seed + 3), args.cached,
                               max(int(x) for x in str(args.tokens).split(",")), args.entities)
        print(f"cached {len(docs)} documents  {time.time() - t0:.0f}s", flush=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / args.warmup_steps)
                                                 * 0.5 * (1 + math.cos(math.pi * min(i, args.steps) / args.steps)))
    while step < args.steps and time.time() - t0 < budget:
        if docs:
            loss, hit = cached_loss(model, docs[rng.randrange(len(docs))], rng, args.max_images)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            gold, kl = loss.item(), 0.0
            schedule.step()
        else:
            n_img, tokens = curriculum(rng, max(step / args.steps, (time.time() - t0) / budget), args)
            ex = make_visual(rng, args.entities, n_img, tokens, layout=args.layout)
            gold, kl, hit = train_step(reader, opt, ex, args.distill)
            schedule.step()
        gold_losses.append(gold)
        kl_losses.append(kl)
        hits.append(hit)
        step += 1
        if step % args.log_every == 0:
            gates = {n: round(float(torch.tanh(g.detach())), 3) for n, g in model.fusion.named_parameters()
                     if n.endswith("gate")}
            recent = slice(-args.log_every, None)
            print(f"step {step}  gold {np.mean(gold_losses[recent]):.3f}  kl {np.mean(kl_losses[recent]):.3f}  "
                  f"owner hit {np.mean(hits[recent]):.2f}  "
                  f"tanh(gate) {gates}  {time.time() - t0:.0f}s", flush=True)
    minutes, fusion_minutes = (time.time() - t0) / 60, (time.time() - t1) / 60
    model.eval()
    results = {mode: accuracy(reader, held_out, mode) for mode in ("images", "no images", "gate 0", "text question")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_fusion(model, out / "fusion.safetensors")
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    payload = {"settings": vars(args), "alignment": align_record, "cached_documents": len(docs), "steps": step,
               "minutes": round(minutes, 2),
               "fusion_minutes": round(fusion_minutes, 2),
               "gold_loss_first_50": mean(gold_losses[:50]), "gold_loss_last_50": mean(gold_losses[-50:]),
               "kl_first_50": mean(kl_losses[:50]), "kl_last_50": mean(kl_losses[-50:]),
               "owner_hit_first_200": mean(hits[:200]), "owner_hit_last_200": mean(hits[-200:]),
               "chance": 1.0 / args.entities, "held_out_examples": len(held_out),
               "held_out_accuracy": results, "device": "cpu", "torch_threads": args.threads}
    (out / "train_vision.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["held_out_accuracy"]), f"chance {1.0 / args.entities:.3f}", f"{step} steps")


if __name__ == "__main__":
    main()
