"""Alignment pre-training of the PatchEncoder against the frozen reader's own text states.

Each crate mark ("red triangle": 6 colours x 4 shapes) gets one target vector: the mean of the
reader's question-free output states over the mark's tokens in the question "Who owns the crate
with the red triangle?" (the states the first question-aware layer, and a fusion layer keyed
``question_free_layers - 1``, see). Grey textures (no crate) get the states of ``NO_CRATE``.
Every patch embedding of a generated image is pulled towards its class target by InfoNCE over
the 25 targets (cosine similarity / temperature), so whichever patch a fusion layer attends
carries the mark in the reader's own coordinates. Targets are computed once; a step runs only
the PatchEncoder on freshly drawn, jittered images.
"""
from __future__ import annotations

import random
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..layout import question_inputs
from ..vision.patch_encoder import PatchEncoder, to_pixels
from .grounding_data import COLOURS, SHAPES, crate_image, texture_image

NO_CRATE = "grey lines"          # the phrase whose states stand for "no crate in this image"
TEMPLATE = "Who owns the crate with the {}?"


def attribute_classes() -> List[str]:
    """The 24 crate marks ("red triangle", ...) followed by ``NO_CRATE``."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES] + [NO_CRATE]


def _find(ids: Sequence[int], part: Sequence[int]) -> int:
    for i in range(len(ids) - len(part) + 1):
        if list(ids[i:i + len(part)]) == list(part):
            return i
    raise ValueError(f"token ids {list(part)} not found in {list(ids)}")


@torch.no_grad()
def text_targets(reader, phrases: Sequence[str]) -> torch.Tensor:
    """(len(phrases), hidden): mean question-free state of each phrase's tokens inside ``TEMPLATE``."""
    model, out = reader.model, []
    for phrase in phrases:
        q = question_inputs(TEMPLATE.format(phrase), reader.tokenizer, reader.config.layout)
        states = model.encode_question(q.input_ids, q.position_ids, q.token_type_ids)[0]   # (Lq, hidden)
        part = reader.tokenizer(phrase, add_special_tokens=False)["input_ids"]
        i = _find(q.input_ids[0].tolist(), part)
        out.append(states[i:i + len(part)].mean(0))
    return torch.stack(out).float()


def draw_batch(rng: random.Random, classes: Sequence[str], n: int) -> Tuple[list, torch.Tensor]:
    """``n`` jittered images with uniformly drawn classes; returns (PIL images, labels (n,))."""
    labels = [rng.randrange(len(classes)) for _ in range(n)]
    images = [texture_image(rng) if classes[k] == NO_CRATE else crate_image(*classes[k].split(), rng)
              for k in labels]
    return images, torch.tensor(labels)


def patch_logits(encoder: PatchEncoder, images: list, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, P, classes): cosine similarity of every patch embedding to every target / temperature."""
    p = next(encoder.parameters())
    emb = encoder.forward_pixels(to_pixels(images, encoder.config.image_size).to(p.device, p.dtype))  # (n, P, H)
    return F.normalize(emb.float(), dim=-1) @ F.normalize(targets, dim=-1).T / temperature


def align_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """InfoNCE over the classes, averaged over images and patches. logits (n, P, C), labels (n,)."""
    n, num_patches, _ = logits.shape
    return F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(num_patches))


@torch.no_grad()
def retrieval_accuracy(encoder: PatchEncoder, targets: torch.Tensor, classes: Sequence[str],
                       rng: random.Random, n: int = 200, temperature: float = 0.1) -> float:
    """Share of fresh images whose mean patch logits pick their own class."""
    images, labels = draw_batch(rng, classes, n)
    return float((patch_logits(encoder, images, targets, temperature).mean(1).argmax(-1) == labels).float().mean())


def align(encoder: PatchEncoder, targets: torch.Tensor, classes: Sequence[str], rng: random.Random,
          steps: int = 300, batch: int = 32, lr: float = 1e-3, temperature: float = 0.1,
          log_every: int = 0) -> List[float]:
    """Train ``encoder`` for ``steps`` InfoNCE steps; returns the loss of every step."""
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    encoder.train()
    for step in range(steps):
        images, labels = draw_batch(rng, classes, batch)
        loss = align_loss(patch_logits(encoder, images, targets, temperature), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"align step {step + 1}  loss {sum(losses[-log_every:]) / log_every:.3f}", flush=True)
    return losses
