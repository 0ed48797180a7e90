"""Low-rank adapters (LoRA) for the encoder's linear layers, and the small delta that ships.

``LoRALinear`` keeps the parameter names of the ``nn.Linear`` it replaces (``weight``,
``bias``) and adds ``lora_A`` (r, in) and ``lora_B`` (out, r, zero-initialised), so a saved
delta ``{name.lora_A, name.lora_B}`` merges back into ``name.weight`` with
``longread.reader.apply_delta``.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_TARGETS = r"layers\.\d+\.(attn\.(q|k|v|out)|mlp\.(up|down))$"
# trained in full and shipped as whole tensors (small)
FULL_TRAIN = r"^(qa_head\.|summaries\.)"


def is_adapter(name: str) -> bool:
    """Whether a parameter (or delta) name is a LoRA factor (``<linear>.lora_A`` / ``.lora_B``)."""
    return name.endswith((".lora_A", ".lora_B"))


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        adapter = F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + adapter * self.scale


def add_lora(model: nn.Module, rank: int = 16, alpha: float = 32.0, dropout: float = 0.05,
             targets: str = DEFAULT_TARGETS) -> float:
    """Swap matching nn.Linear modules for LoRALinear, freeze everything but the adapters and the
    FULL_TRAIN parameters. Returns the LoRA scale (alpha / rank) to store with the delta."""
    pattern = re.compile(targets)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and pattern.search(name):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, LoRALinear(module, rank, alpha, dropout))
    full = re.compile(FULL_TRAIN)
    for name, p in model.named_parameters():
        p.requires_grad = is_adapter(name) or bool(full.search(name))
    return alpha / rank


def trainable_delta(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The parameters that training changed: adapters and fully-trained tensors."""
    # clone: ``.to`` returns the parameter itself when it is already fp32 on the CPU, and a
    # snapshot that aliases the live weights would silently follow later training steps
    return {name: p.detach().to("cpu", torch.float32).clone()
            for name, p in model.named_parameters() if p.requires_grad}


def count(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)
