"""longread.kernels: the attention ops the encoder, the fusion layers and the benchmarks call."""
from .cross_attention import cross_attention, cross_attention_mask, naive_cross_attention
from .sliding_window import attention_mask, naive_sliding_window_attention, sliding_window_attention

__all__ = ["sliding_window_attention", "naive_sliding_window_attention", "attention_mask",
           "cross_attention", "naive_cross_attention", "cross_attention_mask"]
