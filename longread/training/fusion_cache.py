"""Fast fusion training on cached reader states (fusion after the last layer only).

The reader is frozen and the question ("Who owns the crate in the picture?") never changes, so
the reader's last-layer states of a generated document do not depend on its picture: they are
computed once per document. A step then runs only the PatchEncoder, the fusion layer and the
frozen span head: tens of milliseconds on a CPU instead of a reader pass. Each cached document
serves every one of its crates as "the pictured one", with freshly jittered images and a random
number of grey-texture distractors.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..layout import question_inputs
from ..vision.fusion import locality_ranges
from .grounding_data import crate_image, make_visual, texture_image

FACT = re.compile(r"The crate with the (\w+ \w+) belongs to (\w+)\.")


@dataclass
class CachedDoc:
    text: str
    states: torch.Tensor                  # (1, G + n, hidden): output of the last layer, frozen
    words: torch.Tensor                   # (1, G + n, hidden): the question-free states (run_fused_layers' context)
    num_global: int                       # G = question tokens + chunk summaries
    chunk_ids: torch.Tensor               # (1, n) chunk of each document token
    owners: List[Tuple[str, int, int]]    # (crate mark, start token, end token) of every owner name


def owner_tokens(prepared, text: str, name: str) -> Tuple[int, int]:
    """(start, end) token indices of ``name`` in "belongs to <name>."."""
    pos = text.index(f"belongs to {name}.") + len("belongs to ")
    offsets = prepared.tokens.offsets
    start = int(np.searchsorted(offsets[:, 0], pos))
    end = int(np.searchsorted(offsets[:, 1], pos + len(name), side="left"))
    return start, end


@torch.no_grad()
def cache_documents(reader, rng: random.Random, count: int, tokens: int, entities: int) -> List[CachedDoc]:
    """``count`` generated visual documents through the frozen reader up to its last layer."""
    m, docs = reader.model, []
    for _ in range(count):
        ex = make_visual(rng, entities, 1, tokens)
        prepared = reader.prepare(ex.text)
        d = prepared.inputs
        q = question_inputs(ex.question, reader.tokenizer, reader.config.layout)
        xq = m.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        xd = m.encode_document(d.input_ids, d.position_ids, d.token_type_ids)
        summaries, _ = m.summaries(xd, d.chunk_ids, d.num_chunks)
        g = xq.shape[1] + d.num_chunks
        words = torch.cat([xq, summaries, xd], dim=1)
        x = m.run_layers(words, m.config.question_free_layers, len(m.layers), g)
        owners = [(mark, *owner_tokens(prepared, ex.text, name)) for mark, name in FACT.findall(ex.text)]
        docs.append(CachedDoc(ex.text, x, words, g, d.chunk_ids, owners))
    return docs


def fused_logits(model, doc: CachedDoc, images: list, chunks: torch.Tensor):
    """Start/end logits (n,) over the document tokens with ``images`` anchored in ``chunks`` (I,):
    the reader's own answer path (``run_fused_layers``) for a fusion after the last layer."""
    order = torch.argsort(chunks, stable=True)
    patches = model.vision([images[int(i)] for i in order])                                # (I, P, hidden)
    start, end = locality_ranges(doc.chunk_ids, doc.num_global, chunks[order], patches.shape[1])
    (key, layer), = model.fusion.items()
    x = layer(doc.states, patches.reshape(1, -1, patches.shape[-1]), start, end, doc.words)
    out = model.span_logits(x[:, doc.num_global:])
    return out.start_logits[0], out.end_logits[0]


def cached_step(model, doc: CachedDoc, rng: random.Random, max_images: int):
    """Student start/end logits over the document tokens for one drawn picture, and the gold
    (start, end) and candidate starts. The pictured crate is one of the document's crates, anchored
    within one chunk of its fact (where the fusion's locality lets its tokens see it); up to
    ``max_images - 1`` textures join it, anchored in random chunks."""
    k = rng.randrange(len(doc.owners))
    images = [crate_image(*doc.owners[k][0].split(), rng)] + [texture_image(rng)
                                                              for _ in range(rng.randint(0, max_images - 1))]
    num_chunks = int(doc.chunk_ids.max()) + 1
    near = int(doc.chunk_ids[0, doc.owners[k][1]]) + rng.randint(-1, 1)                # the crate: near its fact
    chunks = torch.tensor([min(max(near, 0), num_chunks - 1)] + [rng.randrange(num_chunks) for _ in images[1:]])
    s_logits, e_logits = fused_logits(model, doc, images, chunks)
    return s_logits, e_logits, doc.owners[k][1:], [o[1] for o in doc.owners]


def cached_loss(model, doc: CachedDoc, rng: random.Random, max_images: int):
    """(gold span cross-entropy, whether the gold owner has the highest start logit among the owners)."""
    s_logits, e_logits, (s, e), starts = cached_step(model, doc, rng, max_images)
    loss = F.cross_entropy(s_logits[None], torch.tensor([s])) + F.cross_entropy(e_logits[None], torch.tensor([e]))
    return loss, int(s_logits[starts].argmax()) == starts.index(s)
