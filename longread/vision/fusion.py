"""Gated cross-attention from text tokens to image patches (Flamingo-style).

Each fused layer adds ``tanh(gate) * CrossAttention(LN(x), LN(patches))`` after an encoder
layer; ``gate`` starts at 0, so the reader is exactly the text-only reader until trained.

Locality: the patches of all images are laid out image after image, sorted by the chunk that
holds each image's anchor. A document token of chunk ``c`` attends the patches of the images
anchored in chunks ``c - 1``, ``c`` and ``c + 1`` (its chunk and the next ones on each side);
global rows (the question and the chunk summaries) attend every patch. Because images are
sorted by chunk, each row's allowed patches form one contiguous range, which is what
:func:`longread.kernels.cross_attention` takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
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
    """x (B, N, hidden) attends patches (B, K, hidden) within per-row ranges; gated residual."""

    def __init__(self, hidden: int, heads: int, eps: float = 1e-12):
        super().__init__()
        self.heads = heads
        self.norm_x, self.norm_p = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.gate = nn.Parameter(torch.zeros(()))      # tanh(0) = 0: no effect until trained
        self.backend: Optional[str] = None

    def forward(self, x, patches, key_start, key_end):
        heads = lambda t: rearrange(t, "b n (h d) -> b h n d", h=self.heads).contiguous()  # noqa: E731
        p = self.norm_p(patches)
        y = cross_attention(heads(self.q(self.norm_x(x))), heads(self.k(p)), heads(self.v(p)),
                            key_start=key_start, key_end=key_end, backend=self.backend)   # (B, H, N, D)
        return x + torch.tanh(self.gate) * self.out(rearrange(y, "b h n d -> b n (h d)"))


def attach_fusion(model: nn.Module, layers: Optional[Sequence[int]] = None, vision: Optional[nn.Module] = None,
                  heads: Optional[int] = None) -> nn.Module:
    """Insert gated cross-attention after ``layers`` (default: every question-aware layer) and set
    the model's vision tower (default: a new PatchEncoder). Returns the model."""
    from .patch_encoder import vision_tower

    cfg = model.config
    layers = range(cfg.question_free_layers, cfg.num_hidden_layers) if layers is None else layers
    model.fusion = nn.ModuleDict({str(i): GatedCrossAttention(cfg.hidden_size, heads or cfg.num_attention_heads,
                                                              cfg.layer_norm_eps) for i in layers})
    model.vision = vision if vision is not None else vision_tower(cfg.hidden_size)
    p = next(model.parameters())
    model.fusion.to(p.device, p.dtype)
    model.vision.to(p.device, p.dtype)
    return model


def run_fused_layers(model, x, num_global: int, mask, chunk_ids, ctx: ImageContext):
    """The question-aware layers with the gated cross-attention after each fused layer."""
    start, end = locality_ranges(chunk_ids, num_global, ctx.image_chunks.to(x.device), ctx.patches_per_image)
    patches = ctx.patches.to(x.dtype).expand(x.shape[0], -1, -1)
    for i in range(model.config.question_free_layers, len(model.layers)):
        x = model.run_layers(x, i, i + 1, num_global, mask)
        if str(i) in model.fusion:
            x = model.fusion[str(i)](x, patches, start, end)
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
    attach_fusion(model, layers, vision_tower(model.config.hidden_size, **vision))
    model.fusion.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("fusion.")})
    model.vision.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("vision.")})
    return model
