"""Train the image fusion (gated cross-attention + patch encoder) on generated grounding examples.

The reader's own weights stay frozen; only the fusion layers and the PatchEncoder learn, from
"visual" examples of ``longread.training.grounding_data`` (whose crate is in the picture?),
with the span loss on the owner's name. Writes ``fusion.safetensors`` and ``train_vision.json``
(settings, loss curve, held-out accuracy with images / images removed / gate 0)::

    python -m longread.training.train_vision --out results/vision --max-minutes 10
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import question_inputs
from ..reader import Reader
from ..vision.fusion import attach_fusion, image_context, save_fusion
from ..vision.patch_encoder import PatchEncoder, PatchEncoderConfig
from .grounding_data import make_visual


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="reader checkpoint (default: the offline default reader)")
    p.add_argument("--out", default="results/vision")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--max-minutes", type=float, default=10.0)
    p.add_argument("--entities", type=int, default=4, help="crates described per document")
    p.add_argument("--tokens", type=int, default=256, help="document length of training examples")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gate-lr", type=float, default=1e-2, help="learning rate of the tanh gates")
    p.add_argument("--layers", default=None, help="comma-separated layers followed by a fusion layer "
                   "(default: every question-aware layer)")
    p.add_argument("--eval-examples", type=int, default=60)
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


def span_logits(reader, prepared, question: str):
    """Start/end logits (n,) over document tokens; gradients reach the fusion and vision tower."""
    m, d = reader.model, prepared.inputs
    q = question_inputs(question, reader.tokenizer, reader.config.layout)
    with torch.no_grad():                               # frozen, question-free part
        xq = m.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        xd = m.encode_document(d.input_ids, d.position_ids, d.token_type_ids)
    out = m.read(xq, xd, d.chunk_ids, d.num_chunks, image_context=image_context(m, prepared))
    lq = q.input_ids.shape[1]
    return out.start_logits[0, lq:], out.end_logits[0, lq:]


@torch.no_grad()
def accuracy(reader, examples, mode: str) -> float:
    """Exact-match accuracy; mode: "images", "no images" or "gate 0"."""
    gates = {k: layer.gate.detach().clone() for k, layer in reader.model.fusion.items()}
    if mode == "gate 0":
        for layer in reader.model.fusion.values():
            layer.gate.zero_()
    try:
        hits = 0
        for ex in examples:
            a = reader.answer(ex.text, ex.question, images=None if mode == "no images" else ex.images)
            hits += a.text.strip(" .").lower() == ex.answer.lower()
        return hits / len(examples)
    finally:
        for k, layer in reader.model.fusion.items():
            layer.gate.copy_(gates[k])


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, eval_rng = random.Random(args.seed), random.Random(10_000 + args.seed)
    reader = Reader.from_pretrained(args.model, device="cpu", dtype=torch.float32, ocr=False)
    model = reader.model
    model.requires_grad_(False)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    attach_fusion(model, layers, vision=PatchEncoder(PatchEncoderConfig(out_dim=model.config.hidden_size)))
    trainable = list(model.fusion.parameters()) + list(model.vision.parameters())
    for p in trainable:
        p.requires_grad_(True)
    gates = [layer.gate for layer in model.fusion.values()]
    rest = [p for p in trainable if all(p is not g for g in gates)]
    opt = torch.optim.AdamW([{"params": rest, "lr": args.lr}, {"params": gates, "lr": args.gate_lr}], weight_decay=0.0)
    held_out = [make_visual(eval_rng, args.entities, 1, args.tokens) for _ in range(args.eval_examples)]

    t0, losses, step = time.time(), [], 0
    while step < args.steps and time.time() - t0 < args.max_minutes * 60:
        ex = make_visual(rng, args.entities, 1, args.tokens)
        prepared = reader.prepare(ex.text, ex.images)
        s, e = answer_tokens(prepared, prepared.document.text, ex.answer)
        start_logits, end_logits = span_logits(reader, prepared, ex.question)
        loss = F.cross_entropy(start_logits[None], torch.tensor([s])) + F.cross_entropy(end_logits[None], torch.tensor([e]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            gates = [round(float(torch.tanh(layer.gate)), 3) for layer in model.fusion.values()]
            print(f"step {step}  loss {np.mean(losses[-50:]):.3f}  tanh(gate) {gates}  {time.time() - t0:.0f}s",
                  flush=True)
    minutes = (time.time() - t0) / 60
    results = {mode: accuracy(reader, held_out, mode) for mode in ("images", "no images", "gate 0")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_fusion(model, out / "fusion.safetensors")
    payload = {"settings": vars(args), "steps": step, "minutes": round(minutes, 2),
               "loss_first_50": float(np.mean(losses[:50])) if losses else None,
               "loss_last_50": float(np.mean(losses[-50:])) if losses else None,
               "chance": 1.0 / args.entities, "held_out_accuracy": results,
               "device": "cpu", "torch_threads": args.threads}
    (out / "train_vision.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["held_out_accuracy"]), f"chance {1.0 / args.entities:.3f}", f"{step} steps")


if __name__ == "__main__":
    main()
