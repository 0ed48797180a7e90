"""Which device and dtype the reader runs on."""
from __future__ import annotations

import torch

from .errors import DeviceUnavailableError


def resolve_device(device) -> torch.device:
    """``None``: CUDA when available, else the CPU. A CUDA request without CUDA is a
    ``DeviceUnavailableError``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("CUDA was requested but no CUDA device is available; "
                                     "use device='cpu' (or leave device unset to choose automatically)")
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA and on CPUs with native bf16 matrix units (about 3x faster there than
    fp32); float32 on other CPUs."""
    if device.type == "cuda":
        return torch.bfloat16
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
    except (AttributeError, RuntimeError):
        pass
    return torch.float32
