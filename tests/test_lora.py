"""LoRA adapters: a trained adapter's saved delta, merged into a fresh copy of the base with
``apply_delta``, gives the adapted model's logits; only adapters and the head/summaries train."""
import copy

import torch

from _helpers import randomize_
from longread.lora import LoRALinear, add_lora, trainable_delta
from longread.model import EncoderConfig, LongReaderModel
from longread.reader import apply_delta


def tiny_model():
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, attention_window=(4, 4),
                        hidden_dropout_prob=0.0)
    model = LongReaderModel(cfg).eval()
    randomize_(model)
    return model


def inputs():
    g = torch.Generator().manual_seed(1)
    n, q = 40, 6
    ids = torch.randint(1, 100, (2, n), generator=g)
    pos = torch.arange(n).expand(2, n)
    return ids, pos, torch.zeros_like(ids), q


def test_lora_delta_round_trip():
    base = tiny_model()
    fresh = copy.deepcopy(base)
    scale = add_lora(base, rank=4, alpha=8.0, dropout=0.0)
    assert any(isinstance(m, LoRALinear) for m in base.modules())
    trained = {n for n, p in base.named_parameters() if p.requires_grad}
    assert trained and all(n.endswith((".lora_A", ".lora_B")) or n.startswith(("qa_head.", "summaries."))
                           for n in trained)
    ids, pos, typ, q = inputs()
    before = base(ids, pos, typ, q).start_logits.detach()
    with torch.no_grad():                             # "training": move every trainable tensor
        for p in base.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    after = base(ids, pos, typ, q)
    assert not torch.allclose(after.start_logits, before, atol=1e-4)         # the adapters changed the model
    apply_delta(fresh, trainable_delta(base), lora_scale=scale)
    merged = fresh(ids, pos, typ, q)
    torch.testing.assert_close(merged.start_logits, after.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.end_logits, after.end_logits, atol=1e-5, rtol=1e-5)


def test_question_free_adapters_with_full_upper_layers_round_trip():
    """The training script's mix: question-aware layers in full plus LoRA adapters on the
    question-free layers; the saved delta (whole tensors and LoRA factors) merges back exactly."""
    from longread.training.train import select_trainable

    base = tiny_model()
    base.config.question_free_layers = 1
    fresh = copy.deepcopy(base)
    scale = select_trainable(base, question_free_layers=1, lora_rank=0, question_free_lora_rank=4)
    base.eval()                                       # the adapters' dropout off
    trained = {n for n, p in base.named_parameters() if p.requires_grad}
    assert {n for n in trained if n.startswith("layers.0.")} == {
        f"layers.0.{m}.{f}" for m in ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.up", "mlp.down")
        for f in ("lora_A", "lora_B")}
    assert "layers.1.attn.q.weight" in trained and "layers.1.mlp.up.lora_A" not in trained
    assert not any(n.startswith(("embed", "layers.0.")) and not n.endswith(("lora_A", "lora_B")) for n in trained)
    ids, pos, typ, q = inputs()
    with torch.no_grad():
        for p in base.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    after = base(ids, pos, typ, q)
    apply_delta(fresh, trainable_delta(base), lora_scale=scale)
    merged = fresh(ids, pos, typ, q)
    torch.testing.assert_close(merged.start_logits, after.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.end_logits, after.end_logits, atol=1e-5, rtol=1e-5)
