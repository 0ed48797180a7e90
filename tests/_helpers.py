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
