"""Split a document into contiguous, chunk-aligned shards, one per process."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShardingError


@dataclass(frozen=True)
class ShardPlan:
    token_bounds: np.ndarray    # (P + 1,) rank r holds document tokens [token_bounds[r], token_bounds[r + 1])
    chunk_bounds: np.ndarray    # (P + 1,) and chunks [chunk_bounds[r], chunk_bounds[r + 1])

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.token_bounds)


def plan_shards(chunk_starts: np.ndarray, world: int, min_tokens: int = 1) -> ShardPlan:
    """Cut at the chunk starts nearest to ``n * r / world`` (balanced token counts, whole chunks).

    ``chunk_starts`` (C + 1,): token index where each chunk starts, then n (``TokenizedDocument``).
    Every shard must hold at least ``min_tokens`` tokens (the attention window: a halo comes from
    the neighbouring shard only). Raises ShardingError when the document is too short for
    ``world`` shards."""
    chunk_starts = np.asarray(chunk_starts, dtype=np.int64)
    n, num_chunks = int(chunk_starts[-1]), len(chunk_starts) - 1
    if world < 1:
        raise ShardingError(f"the number of processes must be >= 1, got {world}")
    targets = n * np.arange(1, world) / world
    right = np.clip(np.searchsorted(chunk_starts, targets), 1, num_chunks)
    left = np.clip(right - 1, 0, num_chunks)
    nearer = np.where(targets - chunk_starts[left] <= chunk_starts[right] - targets, left, right)
    chunk_bounds = np.concatenate([[0], nearer, [num_chunks]]).astype(np.int64)
    token_bounds = chunk_starts[chunk_bounds]
    sizes = np.diff(token_bounds)
    if world > num_chunks or sizes.min() < max(min_tokens, 1):
        raise ShardingError(
            f"a document of {n} tokens in {num_chunks} chunks cannot be split into {world} chunk-aligned shards "
            f"of at least {min_tokens} tokens each (shard sizes would be {sizes.tolist()}); use fewer processes "
            f"(at most about {max(1, min(num_chunks, n // max(min_tokens, 1)))}) or the single-process Reader")
    return ShardPlan(token_bounds, chunk_bounds)
