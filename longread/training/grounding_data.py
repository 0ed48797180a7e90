"""Generated documents whose answer needs the images (the grounding benchmark and the fusion
training data share this generator).

Two kinds of example:

* ``"visual"``: the text describes ``num_entities`` crates by a coloured shape ("The crate with
  the red triangle belongs to Marta."); one image shows one of those crates; the question asks
  whose crate is in the picture. Without the picture every owner is equally likely: chance is
  ``1 / num_entities``. The other ``num_images - 1`` images show no crate (grey textures).
* ``"ocr"``: ``num_images`` images each carry a printed label "Crate 17 belongs to Marta"; the
  text mentions the crates but never their owners; the question asks who owns one labelled
  crate. The answer is written only inside an image: without images it cannot be found.

Filler sentences (generated, from a small vocabulary) bring the document to about
``target_tokens`` WordPiece tokens; images are anchored at sentence starts spread over the text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20),
           "purple": (140, 40, 170), "orange": (245, 140, 20)}
SHAPES = ("triangle", "square", "circle", "cross")
NAMES = ("Marta", "Jonas", "Priya", "Tomasz", "Aiko", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta",
         "Hugo", "Ines", "Jakob", "Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Paula", "Quentin", "Rosa",
         "Stefan", "Tariq", "Ulla", "Viktor", "Wanda", "Xavier", "Yusuf", "Zofia")
_SUBJECTS = ("The harbour office", "The night shift", "A customs officer", "The warehouse manager",
             "The inspection team", "A delivery driver", "The crane operator", "The port authority")
_VERBS = ("recorded", "checked", "reported", "noted", "confirmed", "logged", "reviewed", "counted")
_OBJECTS = ("routine deliveries", "the tide tables", "several pallets of timber", "a delayed ferry",
            "the fuel stock", "two empty containers", "the weather forecast", "the loading schedule")
_TIMES = ("on Monday", "before noon", "after the storm", "during the night", "at dawn", "last week",
          "in the afternoon", "on the second day")
TOKENS_PER_FILLER = 9          # about, for the MiniLM WordPiece tokenizer


@dataclass
class GroundingExample:
    text: str
    images: list                  # DocumentImage, anchored
    question: str
    answer: str
    kind: str
    chance: float                 # accuracy of a uniform guess among the candidate answers
    target_image: int = 0         # index of the image that holds the answer
    candidates: List[str] = field(default_factory=list)
    attribute: str = ""           # visual: the pictured crate's mark ("red triangle"), for text-only references


def filler(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)}."


def crate_image(colour: str, shape: str, rng: random.Random, size: int = 96):
    """A brown crate with one coloured shape on it, slightly jittered."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (150 + rng.randint(-10, 10), 105, 60))
    d = ImageDraw.Draw(img)
    d.rectangle([4, 4, size - 5, size - 5], outline=(90, 60, 30), width=3)
    r = rng.randint(size // 5, size // 3)
    cx, cy = size // 2 + rng.randint(-8, 8), size // 2 + rng.randint(-8, 8)
    fill = COLOURS[colour]
    if shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        w = max(3, r // 3)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    return img


def texture_image(rng: random.Random, size: int = 96):
    """A grey texture: random lines, no crate and no text."""
    from PIL import Image, ImageDraw

    g = rng.randint(90, 200)
    img = Image.new("RGB", (size, size), (g, g, g))
    d = ImageDraw.Draw(img)
    for _ in range(8):
        v = rng.randint(40, 230)
        d.line([rng.randint(0, size), rng.randint(0, size), rng.randint(0, size), rng.randint(0, size)],
               fill=(v, v, v), width=rng.randint(1, 4))
    return img


def label_image(text: str, rng: random.Random):
    """A white card with one printed line (readable by OCR)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)
    img = Image.new("RGB", (16 * len(text) + 40, 80), (255, 255, 255))
    ImageDraw.Draw(img).text((14 + rng.randint(0, 6), 22 + rng.randint(-4, 4)), text, fill=(0, 0, 0), font=font)
    return img


def _assemble(rng, facts: List[str], num_images: int, target_tokens: int, together: bool = False):
    """Facts scattered among filler (or, ``together``, one block at a random place: the facts with
    one filler sentence between each); returns the text and ``num_images`` anchors at sentence starts."""
    n_fill = max(0, target_tokens // TOKENS_PER_FILLER - len(facts))
    sentences = [filler(rng) for _ in range(n_fill)]
    if together:                                   # one filler sentence between consecutive facts
        at = rng.randint(0, len(sentences))
        block = [x for f in facts for x in (f, filler(rng))][:-1]
        sentences[at:at] = block
    else:
        for f in facts:
            sentences.insert(rng.randint(0, len(sentences)), f)
    starts, pos = [], 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + 1
    text = " ".join(sentences)
    picks = sorted(rng.sample(range(len(starts)), min(num_images, len(starts))))
    anchors = [starts[i] for i in picks] + [len(text)] * (num_images - len(picks))
    return text, anchors


def make_visual(rng: random.Random, num_entities: int = 8, num_images: int = 1, target_tokens: int = 4096,
                anchor_target: str = "random", layout: str = "scattered") -> GroundingExample:
    """``layout="scattered"``: the crate facts and every image at random sentences (the picture is
    usually far from the facts). ``layout="figure"``: the facts form one block (a filler sentence
    between each) and the picture is anchored at the block's first sentence, as a figure next to
    the text describing it (the other images stay at random sentences); the block lists every
    crate in random order, so the position alone does not tell which one is pictured."""
    from ..document import DocumentImage

    if layout not in ("scattered", "figure"):
        raise ValueError(f"layout must be 'scattered' or 'figure', got {layout!r}")
    combos = rng.sample([(c, s) for c in COLOURS for s in SHAPES], num_entities)
    owners = rng.sample(NAMES, num_entities)
    facts = [f"The crate with the {c} {s} belongs to {o}." for (c, s), o in zip(combos, owners)]
    if layout == "figure":
        order = rng.sample(range(num_entities), num_entities)       # the pictured crate anywhere in the block
        text, anchors = _assemble(rng, [facts[i] for i in order], num_images, target_tokens, together=True)
    else:
        text, anchors = _assemble(rng, facts, num_images, target_tokens)
    target = rng.randrange(num_images)
    if anchor_target == "end":
        anchors[target] = len(text)
    elif layout == "figure":
        anchors[target] = min(text.index(f) for f in facts)
    colour, shape = combos[0]
    images = [DocumentImage(crate_image(colour, shape, rng) if i == target else texture_image(rng),
                            anchor=a, name=f"figure {i + 1}") for i, a in enumerate(anchors)]
    return GroundingExample(text, images, "Who owns the crate in the picture?", owners[0], "visual",
                            1.0 / num_entities, target, owners, f"{colour} {shape}")


def make_ocr(rng: random.Random, num_images: int = 1, target_tokens: int = 4096) -> GroundingExample:
    from ..document import DocumentImage

    ids = rng.sample(range(100, 1000), num_images)
    owners = [rng.choice(NAMES) for _ in ids]
    facts = [f"Crate {i} arrived with the morning ferry." for i in ids]
    text, anchors = _assemble(rng, facts, num_images, target_tokens)
    images = [DocumentImage(label_image(f"Crate {i} belongs to {o}", rng), anchor=a, name=f"label {i}")
              for i, o, a in zip(ids, owners, anchors)]
    target = rng.randrange(num_images)
    return GroundingExample(text, images, f"Who owns crate {ids[target]}?", owners[target], "ocr",
                            0.0, target, owners)
