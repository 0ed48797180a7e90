"""Gated cross-attention from text tokens to image patches (Flamingo-style).

Each fused layer adds ``tanh(gate) * CrossAttention(LN(x), LN(patches))`` after an encoder
layer; ``gate`` starts at 0, so the reader is exactly the text-only reader until trained.
With ``ffn=True`` a second gated sub-block follows, as in Flamingo's GATED XATTN-DENSE:
``x + tanh(ffn_gate) * FFN(LN(x))``; with ``context=K`` it is a bilinear match instead,
``x + tanh(ffn_gate) * W (A LN(c) * B LN(y))`` between what the row read from the images (``y``)
and ``c``, the mean question-free state of the row's K preceding tokens. That is what lets a
token compare its own sentence ("the crate with the red triangle belongs to Marta") with the
picture: the attention output alone is nearly the same vector for every row that attends one
image, and the upper layers' state of a name barely says which mark its sentence names. Rows
with no image in range are left unchanged.
A fusion layer keyed ``question_free_layers - 1`` (the last question-free layer) runs on the
input of the first question-aware layer, so every question-aware layer can route what the
question rows took from the images.

Locality: the patches of all images are laid out image after image, sorted by the chunk that
holds each image's anchor. A document token of chunk ``c`` attends the patches of the images
anchored in chunks ``c - 1``, ``c`` and ``c + 1`` (its chunk and the next ones on each side);
global rows (the question and the chunk summaries) attend every patch. Because images are
sorted by chunk, each row's allowed patches form one contiguous range, which is what
:func:`longread.kernels.cross_attention` takes.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from longread.kernels import cross_attention

NEIGHBOUR_CHUNKS = 1


@dataclass
class ImageContext:
    """Patches of a document's images, ordered by the chunk of their anchor."""
    patches: torch.Tensor        # (1, num_images * P, hidden)
    image_chunks: torch.Tensor   # (num_images,) int64, sorted ascending
    patches_per_image: int


def locality_ranges(chunk_ids: torch.Tensor, num_global: int, image_chunks: torch.Tensor,
                    patches_per_image: int, neighbours: int = NEIGHBOUR_CHUNKS):
    """Key ranges for ``[global rows | document tokens]``.

    chunk_ids: (B, Nd) chunk of each document token; image_chunks: (I,) sorted.
    Returns key_start, key_end: (B, num_global + Nd) int64 patch indices."""
    bsz = chunk_ids.shape[0]
    total = image_chunks.numel() * patches_per_image
    first = torch.searchsorted(image_chunks, chunk_ids - neighbours, right=False)     # (B, Nd)
    last = torch.searchsorted(image_chunks, chunk_ids + neighbours, right=True)
    g_start = torch.zeros(bsz, num_global, dtype=torch.long, device=chunk_ids.device)
    start = torch.cat([g_start, first * patches_per_image], dim=1)
    end = torch.cat([g_start + total, last * patches_per_image], dim=1)
    return start, end


class GatedCrossAttention(nn.Module):
    """x (B, N, hidden) attends patches (B, K, hidden) within per-row ranges; gated residual,
    optionally followed by a gated FFN (``ffn=True``). Rows whose range is empty stay unchanged.
    ``context > 0``: the FFN becomes a bilinear match ``W (A c_i * B y_i)`` between what row ``i``
    read from the images (``y_i``, the attention output) and ``c_i``, the mean of
    ``context_states`` (default: x) over its ``context`` preceding rows, itself included, so a token
    can check what the words just before it said against the picture; :func:`run_fused_layers`
    passes the question-free states, which still name each word."""

    def __init__(self, hidden: int, heads: int, eps: float = 1e-12, ffn: bool = False, context: int = 0):
        super().__init__()
        self.heads = heads
        self.norm_x, self.norm_p = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.gate = nn.Parameter(torch.zeros(()))      # tanh(0) = 0: no effect until trained
        if ffn:
            if context > 0:
                self.norm_c, self.norm_y = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)
                self.register_buffer("context", torch.tensor(context))      # saved with the weights
                self.match_c, self.match_y = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
                self.ffn = nn.Linear(hidden, hidden)
            else:
                self.norm_f = nn.LayerNorm(hidden, eps=eps)
                self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
            self.ffn_gate = nn.Parameter(torch.zeros(()))
        else:
            self.ffn = None
        self.backend: Optional[str] = None

    def forward(self, x, patches, key_start, key_end, context_states=None):
        heads = lambda t: rearrange(t, "b n (h d) -> b h n d", h=self.heads).contiguous()  # noqa: E731
        p = self.norm_p(patches)
        y = cross_attention(heads(self.q(self.norm_x(x))), heads(self.k(p)), heads(self.v(p)),
                            key_start=key_start, key_end=key_end, backend=self.backend)   # (B, H, N, D)
        seen = (key_end > key_start).to(x.dtype)[..., None]        # (B, N, 1): rows with a patch in range
        y = rearrange(y, "b h n d -> b n (h d)")
        x = x + torch.tanh(self.gate) * seen * self.out(y)
        if self.ffn is None:
            return x
        if hasattr(self, "context"):
            c = left_mean(x if context_states is None else context_states, int(self.context))
            h = self.match_c(self.norm_c(c)) * self.match_y(self.norm_y(y))
        else:
            h = self.norm_f(x)
        return x + torch.tanh(self.ffn_gate) * seen * self.ffn(h)


def left_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, H) -> (B, N, H): row i is the mean of rows max(0, i - k + 1) .. i (a windowed sum,
    so no long-range rounding error)."""
    sums = F.avg_pool1d(F.pad(x.transpose(1, 2), (k - 1, 0)), k, stride=1) * k             # (B, H, N)
    counts = (torch.arange(x.shape[1], device=x.device) + 1).clamp(max=k).to(x.dtype)
    return (sums / counts).transpose(1, 2)


def attach_fusion(model: nn.Module, layers: Optional[Sequence[int]] = None, vision: Optional[nn.Module] = None,
                  heads: Optional[int] = None, ffn: bool = False, context: int = 0) -> nn.Module:
    """Insert gated cross-attention after ``layers`` (default: every question-aware layer; the last
    question-free layer is allowed too) and set the model's vision tower (default: a new
    PatchEncoder). ``ffn``: each fusion layer gets the gated FFN sub-block (reading ``context``
    preceding rows too when > 0). Returns the model."""
    from .patch_encoder import vision_tower

    from ..errors import FusionLayerError

    cfg = model.config
    layers = range(cfg.question_free_layers, cfg.num_hidden_layers) if layers is None else layers
    allowed = range(max(cfg.question_free_layers - 1, 0), cfg.num_hidden_layers)
    bad = [i for i in layers if i not in allowed]
    if bad:
        raise FusionLayerError(f"fusion after layer(s) {bad} is not possible: this reader takes fusion after "
                               f"layers {allowed.start}..{allowed.stop - 1} (the last question-free layer "
                               f"or a question-aware one); pick layers in that range")
    model.fusion = nn.ModuleDict({str(i): GatedCrossAttention(cfg.hidden_size, heads or cfg.num_attention_heads,
                                                              cfg.layer_norm_eps, ffn, context) for i in layers})
    model.vision = vision if vision is not None else vision_tower(cfg.hidden_size)
    p = next(model.parameters())
    model.fusion.to(p.device, p.dtype)
    model.vision.to(p.device, p.dtype)
    return model


def run_fused_layers(model, x, num_global: int, mask, chunk_ids, ctx: ImageContext):
    """The question-aware layers with the gated cross-attention after each fused layer (a layer
    keyed ``question_free_layers - 1`` first, on the question-aware layers' input)."""
    start, end = locality_ranges(chunk_ids, num_global, ctx.image_chunks.to(x.device), ctx.patches_per_image)
    patches = ctx.patches.to(x.dtype).expand(x.shape[0], -1, -1)
    first, words = model.config.question_free_layers, x          # words: the question-free states
    if str(first - 1) in model.fusion:
        x = model.fusion[str(first - 1)](x, patches, start, end, words)
    for i in range(first, len(model.layers)):
        x = model.run_layers(x, i, i + 1, num_global, mask)
        if str(i) in model.fusion:
            x = model.fusion[str(i)](x, patches, start, end, words)
    return x


def image_context(model, prepared) -> Optional[ImageContext]:
    """Patch embeddings of a prepared document's images (ordered by anchor chunk), or None."""
    reading = prepared.reading
    if reading is None or not reading.images or getattr(model, "vision", None) is None:
        return None
    starts = prepared.tokens.offsets[:, 0]
    token = np.minimum(np.searchsorted(starts, np.asarray(reading.anchors), side="left"), len(starts) - 1)
    chunks = torch.as_tensor(prepared.inputs.token_chunk[token], dtype=torch.long)
    order = torch.argsort(chunks, stable=True)
    patches = model.vision([reading.images[int(i)].image for i in order])              # (I, P, hidden)
    return ImageContext(patches.reshape(1, -1, patches.shape[-1]), chunks[order], patches.shape[1])


@contextmanager
def closed_gates(model):
    """Within the block every fusion gate (attention and FFN) is 0: the text-only reader with the
    images still attached. The gates are restored on exit."""
    gates = [p for name, p in model.fusion.named_parameters() if name.endswith("gate")]
    saved = [g.detach().clone() for g in gates]
    with torch.no_grad():
        for g in gates:
            g.zero_()
    try:
        yield model
    finally:
        with torch.no_grad():
            for g, v in zip(gates, saved):
                g.copy_(v)


def save_fusion(model, path) -> None:
    """Write the fusion layers and the vision tower (safetensors) to ``path``."""
    from safetensors.torch import save_file

    state = {f"fusion.{k}": v for k, v in model.fusion.state_dict().items()}
    state.update({f"vision.{k}": v for k, v in model.vision.state_dict().items()})
    save_file({k: v.detach().float().contiguous() for k, v in state.items()}, str(Path(path)))


def load_fusion(model, path, layers: Optional[Sequence[int]] = None, vision_config: Optional[dict] = None,
                **vision_options) -> nn.Module:
    """Attach fusion + PatchEncoder to ``model`` and load weights written by :func:`save_fusion`.
    ``vision_config`` (a ``PatchEncoderConfig.to_dict()``, out_dim excluded) and ``vision_options``
    configure the PatchEncoder."""
    from safetensors.torch import load_file

    from .patch_encoder import vision_tower

    state = load_file(str(path))
    if layers is None:
        layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("fusion.")})
    vision = {**(vision_config or {}), **vision_options}
    ffn = any(k.startswith("fusion.") and ".ffn" in k for k in state)
    context = max([int(v) for k, v in state.items() if k.startswith("fusion.") and k.endswith(".context")] or [0])
    attach_fusion(model, layers, vision_tower(model.config.hidden_size, **vision), ffn=ffn, context=context)
    model.fusion.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("fusion.")})
    model.vision.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("vision.")})
    return model
