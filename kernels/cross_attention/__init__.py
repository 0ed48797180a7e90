"""Cross-attention with per-query key ranges: Triton forward/backward, blocked torch path, dense reference."""
from .attention import BACKENDS, CrossAttentionFunction, cross_attention
from .naive import cross_attention_mask, naive_cross_attention

__all__ = ["BACKENDS", "CrossAttentionFunction", "cross_attention", "cross_attention_mask",
           "naive_cross_attention"]
