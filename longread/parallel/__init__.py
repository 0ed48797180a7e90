"""Reading one document larger than a device holds: sequence parallelism on ``torch.distributed``.

    torchrun --nproc-per-node 4 my_script.py      # in my_script.py, on every rank:
        torch.distributed.init_process_group("gloo")          # "nccl" on GPUs
        answer = sequence_parallel_answer(reader, "book.txt", "Who wrote it?")

Every rank returns the same answer as ``reader.answer`` on one process.
"""
from .sequence import ShardLogits, encode_shard, sequence_parallel_answer, sequence_parallel_logits
from .shards import ShardPlan, plan_shards
from .spans import distributed_best_spans

__all__ = ["sequence_parallel_answer", "sequence_parallel_logits", "encode_shard", "ShardLogits", "ShardPlan",
           "plan_shards", "distributed_best_spans"]
