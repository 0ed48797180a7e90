"""Sliding-window + global sparse attention: Triton forward/backward, blocked torch path, dense reference."""
from .attention import BACKENDS, SlidingWindowAttentionFunction, sliding_window_attention
from .naive import attention_mask, naive_sliding_window_attention

__all__ = ["BACKENDS", "SlidingWindowAttentionFunction", "sliding_window_attention",
           "attention_mask", "naive_sliding_window_attention"]
