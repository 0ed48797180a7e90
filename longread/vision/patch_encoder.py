"""Images -> patch embeddings in the text encoder's hidden size.

Two towers with one interface, ``tower(images: List[PIL.Image]) -> (num_images, patches, hidden)``:

* :class:`PatchEncoder`: a small ViT (patchify convolution, learned positions, pre-LN
  transformer layers, projection to the text hidden size), trained by the project: no
  pretrained vision weights are needed.
* :class:`PretrainedVisionTower`: a Hugging Face vision model a user has on disk (e.g. a
  ``CLIPVisionModel`` or ``ViTModel`` directory, loaded with ``local_files_only``), its patch
  states mapped to the text hidden size by a trainable linear projection.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Union

import numpy as np
import torch
import torch.nn as nn

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass
class PatchEncoderConfig:
    image_size: int = 64          # images are resized to image_size x image_size
    patch_size: int = 16          # (image_size / patch_size)^2 patches per image
    width: int = 128
    layers: int = 2
    heads: int = 4
    out_dim: int = 384            # the text encoder's hidden size

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def to_pixels(images, size: int) -> torch.Tensor:
    """RGB PIL images -> (n, 3, size, size) float32, normalised to [-1, 1]."""
    from PIL import Image

    arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
              for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0                # (n, 3, S, S)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


class PatchEncoder(nn.Module):
    """Small ViT: (n, 3, S, S) pixels -> (n, (S/p)^2, out_dim) patch embeddings."""

    def __init__(self, cfg: PatchEncoderConfig):
        super().__init__()
        self.config = cfg
        self.patchify = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.position = nn.Parameter(torch.randn(1, self.num_patches, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.out_dim)

    def forward_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patchify(pixels).flatten(2).transpose(1, 2) + self.position           # (n, P, width)
        return self.proj(self.norm(self.blocks(x)))                                     # (n, P, out_dim)

    def forward(self, images: List) -> torch.Tensor:
        p = next(self.parameters())
        return self.forward_pixels(to_pixels(images, self.config.image_size).to(p.device, p.dtype))


class PretrainedVisionTower(nn.Module):
    """A local Hugging Face vision model (CLIP vision / ViT / SigLIP ...) + a trainable projection."""

    def __init__(self, path: Union[str, Path], out_dim: int, freeze: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPVisionModel

        path = str(path)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if getattr(config, "model_type", "") == "clip":          # a full CLIP: take its vision half
            self.model = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        if freeze:
            self.model.requires_grad_(False)
        hidden = self.model.config.hidden_size
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, images: List) -> torch.Tensor:
        p = self.proj.weight
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        states = self.model(pixel_values=pixels.to(p.device, p.dtype)).last_hidden_state   # (n, 1 + P, hidden)
        return self.proj(states[:, 1:])                                                   # patches, no CLS


def vision_tower(out_dim: int, pretrained: Union[str, Path, None] = None, **config) -> nn.Module:
    """The project's PatchEncoder, or a local pretrained tower when ``pretrained`` is a directory."""
    if pretrained is not None:
        return PretrainedVisionTower(pretrained, out_dim)
    return PatchEncoder(PatchEncoderConfig(out_dim=out_dim, **config))
