"""Which chunks the model attended to for a question.

In the last question-aware layer the question tokens are global: each attends to every key of
``[question | chunk summaries | document tokens]``. A chunk's weight is the share of that
attention landing on the chunk (its summary token plus its own tokens), averaged over heads and
question tokens (and over the reads, when coarse-to-fine reading reads in rounds: a chunk not
read gets only its summary's share, and none when its summary is not among those read). The
weights of all chunks sum to 1 minus the share the question keeps on itself.

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

    def __init__(self, model, prepared, reader=None):
        self.attn = model.layers[-1].attn
        self.reader = reader                                   # tells which tokens each read holds
        self.num_chunks = prepared.tokens.num_chunks
        self.summaries = prepared.inputs.num_chunks          # summary tokens in the read (0 or C)
        self.token_chunk = torch.as_tensor(prepared.inputs.token_chunk, dtype=torch.long)
        self._captured = []
        self._gather = None
        self._summary_chunks = torch.arange(self.summaries)   # chunk of each summary token in the read
        self._hook = None
        self._thread = None

    def __enter__(self) -> "ChunkAttention":
        # the hook sits on a module shared by every thread using this reader: it records only
        # the reads of the thread that opened it
        self._thread = threading.get_ident()
        self._hook = self.attn.register_forward_pre_hook(self._grab)
        if self.reader is not None:
            self.reader.read_observers.append(self._layout)
        return self

    def __exit__(self, *exc):
        self._hook.remove()
        if self.reader is not None:
            self.reader.read_observers.remove(self._layout)

    def _layout(self, layout, summary_chunks):
        if threading.get_ident() == self._thread:
            self._gather = layout.gather          # (L,) document token of each read position, -1: gap
            self._summary_chunks = summary_chunks

    def _grab(self, module, args):
        if threading.get_ident() != self._thread:
            return
        x, _window, num_global, key_padding_mask = args[:4]
        rows = args[5] if len(args) > 5 else None          # x holds only these rows of the read
        length = x.shape[1] if rows is None else key_padding_mask.shape[1]
        summary_chunks = self._summary_chunks
        if num_global <= len(summary_chunks):
            return
        gather = self._gather
        if gather is not None and length == num_global + len(gather):                # a read of some chunks
            doc_chunk = torch.where(gather >= 0, self.token_chunk[gather.clamp(min=0).cpu()], -1)
        elif length == num_global + len(self.token_chunk):                            # every chunk
            doc_chunk = self.token_chunk
        else:
            return
        self._captured.append((x.detach(), num_global - len(summary_chunks), key_padding_mask, doc_chunk,
                               summary_chunks, rows))

    def weights(self) -> Optional[np.ndarray]:
        """(C,) share of the question's attention on each chunk; None if no read was recorded."""
        if not self._captured:
            return None
        shares = []
        for x, lq, mask, doc_chunk, summary_chunks, rows in self._captured:
            key_chunk = torch.cat([torch.full((lq,), -1), summary_chunks, doc_chunk])
            if rows is not None:                            # only the unmasked rows were computed
                key_chunk, mask = key_chunk[rows.cpu()], None
            shares.append(question_attention_by_chunk(self.attn, x[0], lq, key_chunk, self.num_chunks,
                                                      None if mask is None else mask[0]))
        return np.mean(shares, axis=0)


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
    with ChunkAttention(reader.model, prepared, reader) as recorder:
        ans = reader.answer(prepared, question, **answer_options)
    return ans, recorder.weights()
