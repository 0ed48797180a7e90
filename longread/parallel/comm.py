"""The ``torch.distributed`` exchanges of sequence parallelism.

Every function takes ``group`` (``None``: the default group). Without an initialised process
group (or with one process) they do no communication, so the same code runs on one process.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.distributed as dist


def rank_and_world(group=None) -> Tuple[int, int]:
    """This process's rank in ``group`` and the group's size; (0, 1) without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def exchange_halo(x: torch.Tensor, left: int, right: int, group=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Point-to-point halo exchange along dim 1 of ``x`` (B, n, ...), the rank's own rows.

    Sends the last ``left`` rows to the next rank and the first ``right`` rows to the previous
    one. Returns (rows ``left`` before this shard, rows ``right`` after it): (B, left, ...) and
    (B, right, ...), empty at the ends of the sequence. Every shard must hold at least
    ``max(left, right)`` rows (the shard planner guarantees it)."""
    rank, world = rank_and_world(group)
    empty = x[:, :0]
    if world == 1:
        return empty, empty
    if x.shape[1] < max(left, right):
        raise ValueError(f"a shard of {x.shape[1]} rows cannot supply a halo of ({left}, {right})")
    recv_left = x.new_empty((x.shape[0], left) + x.shape[2:]) if rank > 0 and left else empty
    recv_right = x.new_empty((x.shape[0], right) + x.shape[2:]) if rank < world - 1 and right else empty
    ops: List[dist.P2POp] = []
    if rank < world - 1 and left:       # my tail is the next rank's left halo
        tail = x[:, x.shape[1] - left:].contiguous()
        ops.append(dist.P2POp(dist.isend, tail, _global_rank(group, rank + 1), group, tag=1))
    if rank > 0 and right:              # my head is the previous rank's right halo
        ops.append(dist.P2POp(dist.isend, x[:, :right].contiguous(), _global_rank(group, rank - 1), group, tag=2))
    if recv_left.numel():
        ops.append(dist.P2POp(dist.irecv, recv_left, _global_rank(group, rank - 1), group, tag=1))
    if recv_right.numel():
        ops.append(dist.P2POp(dist.irecv, recv_right, _global_rank(group, rank + 1), group, tag=2))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return recv_left, recv_right


def all_gather_rows(x: torch.Tensor, counts: List[int], group=None) -> torch.Tensor:
    """Concatenate every rank's rows along dim 1. ``x`` (B, counts[rank], ...); returns
    (B, sum(counts), ...) in rank order on every rank (shards padded to the largest)."""
    rank, world = rank_and_world(group)
    if world == 1:
        return x
    most = max(counts)
    padded = torch.cat([x, x.new_zeros((x.shape[0], most - x.shape[1]) + x.shape[2:])], dim=1).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:, :c] for p, c in zip(parts, counts)], dim=1)


def all_reduce_(x: torch.Tensor, op=None, group=None) -> torch.Tensor:
    """In-place all-reduce (sum by default); a no-op on one process."""
    if rank_and_world(group)[1] > 1:
        dist.all_reduce(x, op=op or dist.ReduceOp.SUM, group=group)
    return x


def global_logsumexp(x: torch.Tensor, group=None, dim: int = -1) -> torch.Tensor:
    """logsumexp over ``dim`` of the concatenation of every rank's ``x`` (exact up to rounding):
    a max all-reduce, then a sum all-reduce of the rescaled local sums."""
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    peak = all_reduce_(m.clone(), dist.ReduceOp.MAX, group)
    total = all_reduce_(torch.exp(x - peak).sum(dim=dim, keepdim=True), group=group)
    return (peak + torch.log(total)).squeeze(dim)


def merge_partial_attention(out: torch.Tensor, lse: torch.Tensor,
                            group=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Combine attention computed over disjoint key sets on each rank.

    ``out`` (..., D): softmax-weighted values over this rank's keys; ``lse`` (...): the
    log-sum-exp of their scores (-inf with no keys). Returns the output and log-sum-exp over the
    union of all ranks' keys, identical on every rank."""
    peak = all_reduce_(torch.where(torch.isfinite(lse), lse, torch.full_like(lse, -1e30)), dist.ReduceOp.MAX, group)
    w = torch.exp(lse - peak)                                                    # (...)
    packed = torch.cat([out * w[..., None], w[..., None]], dim=-1)
    packed = all_reduce_(packed.contiguous(), group=group)
    total = packed[..., -1]
    return packed[..., :-1] / total[..., None], peak + torch.log(total)
