"""Which chunks the model attended to for a question.

In the last question-aware layer the question tokens are global: each attends to every key of
``[question | chunk summaries | document tokens]``. A chunk's weight is the share of that
attention landing on the chunk (its summary token plus its own tokens), averaged over heads and
question tokens. The weights of all chunks sum to 1 minus the share the question keeps on itself.

    ans, weights = answer_with_attention(reader, doc, "Who?")     # weights: (num_chunks,) float
"""
from __future__ import annotations

import math
import threading
from typing import Optional, Tuple

import numpy as np
import torch

KEY_BLOCK = 4096      # keys scored at a time (memory: heads x question tokens x KEY_BLOCK)


class ChunkAttention:
    """Context manager: records the input of the model's last attention layer during a read of
    ``prepared`` and turns it into per-chunk attention weights (``weights()``: (C,) float64)."""

    def __init__(self, model, prepared):
        self.attn = model.layers[-1].attn
        self.num_chunks = prepared.tokens.num_chunks
        self.summaries = prepared.inputs.num_chunks          # summary tokens in the read (0 or C)
        self.token_chunk = torch.as_tensor(prepared.inputs.token_chunk, dtype=torch.long)
        self._captured = None
        self._hook = None
        self._thread = None

    def __enter__(self) -> "ChunkAttention":
        # the hook sits on a module shared by every thread using this reader: it records only
        # the reads of the thread that opened it
        self._thread = threading.get_ident()
        self._hook = self.attn.register_forward_pre_hook(self._grab)
        return self

    def __exit__(self, *exc):
        self._hook.remove()

    def _grab(self, module, args):
        if threading.get_ident() != self._thread:
            return
        x, _window, num_global, key_padding_mask = args[:4]
        n_doc = len(self.token_chunk)
        if num_global > self.summaries and x.shape[1] == num_global + n_doc:       # a question-aware read
            self._captured = (x.detach(), num_global - self.summaries, key_padding_mask)

    def weights(self) -> Optional[np.ndarray]:
        """(C,) share of the question's attention on each chunk; None if no read was recorded."""
        if self._captured is None:
            return None
        x, lq, mask = self._captured
        key_chunk = torch.cat([torch.full((lq,), -1), torch.arange(self.summaries), self.token_chunk])
        return question_attention_by_chunk(self.attn, x[0], lq, key_chunk, self.num_chunks,
                                           None if mask is None else mask[0])


@torch.inference_mode()
def question_attention_by_chunk(attn, x: torch.Tensor, lq: int, key_chunk: torch.Tensor, num_chunks: int,
                                key_mask: Optional[torch.Tensor] = None) -> np.ndarray:
    """Attention of the first ``lq`` rows of layer input ``x`` (L, hidden) over all L keys,
    summed per chunk (``key_chunk`` (L,): chunk of each key, -1 for keys of no chunk) and
    averaged over heads and rows. One pass over key blocks with an online softmax (fp32, one
    block of keys at a time: memory heads x lq x KEY_BLOCK). Returns (C,)."""
    heads = attn.n_head
    q_proj, k_proj = (attn.q_global, attn.k_global) if attn.global_projections else (attn.q, attn.k)
    split = lambda t: t.view(t.shape[0], heads, -1).transpose(0, 1)       # (L, hidden) -> (H, L, D)  # noqa: E731
    q = split(torch.nn.functional.linear(x[:lq].float(), q_proj.weight.float(), _f(q_proj.bias)))   # (H, lq, D)
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    run_max = torch.full((heads, lq), -math.inf)
    run_sum = torch.zeros(heads, lq)
    acc = torch.zeros(heads, lq, num_chunks + 1)                         # last bin: keys of no chunk
    for s in range(0, x.shape[0], KEY_BLOCK):
        k = split(torch.nn.functional.linear(x[s:s + KEY_BLOCK].float(), k_proj.weight.float(), _f(k_proj.bias)))
        scores = (q @ k.transpose(1, 2)).cpu()                            # (H, lq, b)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[s:s + KEY_BLOCK].cpu(), -math.inf)
        new_max = torch.maximum(run_max, scores.amax(-1))
        rescale = torch.exp(run_max - new_max).nan_to_num(0.0)
        p = torch.exp(scores - new_max[..., None]).nan_to_num(0.0)
        run_sum = run_sum * rescale + p.sum(-1)
        bins = key_chunk[s:s + KEY_BLOCK].clone()
        bins[bins < 0] = num_chunks
        acc = acc * rescale[..., None]
        acc.index_add_(2, bins, p)
        run_max = new_max
    share = acc[..., :num_chunks] / run_sum.clamp(min=1e-30)[..., None]
    return share.mean(dim=(0, 1)).double().numpy()


def _f(t):
    return None if t is None else t.float()


def answer_with_attention(reader, doc, question: str, **answer_options) -> Tuple[object, Optional[np.ndarray]]:
    """``reader.answer(doc, question)`` and the per-chunk attention weights of that same read."""
    prepared = reader.prepare(doc)
    with ChunkAttention(reader.model, prepared) as recorder:
        ans = reader.answer(prepared, question, **answer_options)
    return ans, recorder.weights()
