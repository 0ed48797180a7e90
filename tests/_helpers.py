"""Helpers shared by test modules."""
import torch


def randomize_(model: torch.nn.Module, std: float = 0.1) -> None:
    """Redraw every parameter in place (HF zero-inits biases and sets LayerNorm to 1/0, which
    would hide mapping mistakes in those tensors)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + std * torch.randn_like(p))
            else:
                p.normal_(0.0, std)


def chromium() -> str:
    """The path of a headless-capable Chromium, or skip the test."""
    import shutil

    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium binary found (apt-get install chromium): this test needs a real browser")
