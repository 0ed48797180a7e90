"""longread.kernels: the attention ops the encoder, the fusion layers and the benchmarks call."""
from .sliding_window import attention_mask, naive_sliding_window_attention, sliding_window_attention

__all__ = ["sliding_window_attention", "naive_sliding_window_attention", "attention_mask"]
