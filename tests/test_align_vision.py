"""Training the image fusion: the PatchEncoder alignment learns to name the crate mark, the
distillation loss is a KL divergence, a training step moves only the fusion and the patch
encoder, and the fusion variants (FFN sub-block, layer before the question-aware layers) keep the
reader bitwise unchanged where they must."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from longread.document import DocumentImage  # noqa: E402
from longread.errors import FusionLayerError  # noqa: E402
from longread.training.align_vision import (NO_CRATE, align, align_loss, draw_batch, patch_logits,  # noqa: E402
                                            retrieval_accuracy, text_targets)
from longread.training.fusion_cache import cache_documents, cached_loss, fused_logits  # noqa: E402
from longread.training.grounding_data import crate_image, make_visual, texture_image  # noqa: E402
from longread.training.train_vision import distill_loss, make_optimizer, text_question, train_step  # noqa: E402
from longread.vision.fusion import attach_fusion, closed_gates, left_mean, load_fusion, save_fusion  # noqa: E402
from longread.vision.patch_encoder import PatchEncoder, PatchEncoderConfig  # noqa: E402

from test_reader import load, tiny_dir  # noqa: E402,F401

CLASSES = ["red triangle", "blue circle", "green cross", NO_CRATE]
DOC = " ".join(f"Sentence number {i} talks about crate {i} and its colour." for i in range(40))
QUESTION = "Which crate is in the picture?"


def small_encoder(out_dim=64):
    return PatchEncoder(PatchEncoderConfig(image_size=32, patch_size=8, width=32, heads=2, out_dim=out_dim))


@pytest.fixture
def reader(tiny_dir):  # noqa: F811
    return load(tiny_dir, summary_tokens=True, chunk_size=48, ocr=False)


def test_alignment_learns_to_name_the_mark(reader):
    torch.manual_seed(0)
    targets = text_targets(reader, CLASSES)
    assert targets.shape == (4, 64)
    assert not torch.allclose(targets[0], targets[1])              # different phrases, different states
    enc = small_encoder()
    before = retrieval_accuracy(enc, targets, CLASSES, random.Random(7), n=120)
    losses = align(enc, targets, CLASSES, random.Random(1), steps=120, batch=16, lr=3e-3, temperature=0.05)
    after = retrieval_accuracy(enc, targets, CLASSES, random.Random(7), n=120, temperature=0.05)
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert after > 0.9 and after > before + 0.3


def test_align_loss_is_cross_entropy_over_every_patch():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 5, 4, generator=g), torch.tensor([0, 3, 1])
    expected = sum(F.cross_entropy(logits[i, p][None], labels[i][None]) for i in range(3) for p in range(5)) / 15
    torch.testing.assert_close(align_loss(logits, labels), expected)
    images, drawn = draw_batch(random.Random(0), CLASSES, 6)
    out = patch_logits(small_encoder(), images, torch.randn(4, 64), 0.1)
    assert out.shape == (6, 16, 4) and out.abs().max() <= 10 + 1e-4          # cosines / 0.1
    assert drawn.tolist() == [lab for lab in drawn.tolist() if 0 <= lab < 4]


def test_distill_loss_is_the_kl_divergence():
    g = torch.Generator().manual_seed(0)
    s, e, t1, t2 = (torch.randn(30, generator=g) for _ in range(4))
    assert distill_loss((s, e), (s, e)).abs() < 1e-6
    assert distill_loss((s, e), (s + 3.0, e - 1.0)).abs() < 1e-5              # shifts do not change a softmax
    p, q = F.softmax(t1, -1), F.softmax(s, -1)
    kl = (p * (p.log() - q.log())).sum()
    p2, q2 = F.softmax(t2, -1), F.softmax(e, -1)
    kl = kl + (p2 * (p2.log() - q2.log())).sum()
    torch.testing.assert_close(distill_loss((s, e), (t1, t2)), kl)


def test_a_training_step_moves_only_the_fusion_and_the_patch_encoder(reader):
    torch.manual_seed(0)
    model = reader.model
    model.config.question_free_layers = 1                            # a fusion layer before layer 1 is allowed
    model.requires_grad_(False)
    attach_fusion(model, [0, 1], vision=small_encoder(), ffn=True)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(("fusion.", "vision."))}
    moving = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("fusion.", "vision."))}
    opt = make_optimizer(model, lr=1e-3, gate_lr=1e-2, vision_lr=1e-3)
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len({id(p) for p in in_opt}) == len(moving)       # every fusion/vision tensor, once
    assert {id(p) for p in in_opt} == {id(p) for n, p in model.named_parameters() if n in moving}
    ex = make_visual(random.Random(3), num_entities=4, num_images=2, target_tokens=120)
    assert ex.attribute in text_question(ex) and f"the {ex.attribute} belongs to {ex.answer}" in ex.text
    for _ in range(2):
        gold, kl, _ = train_step(reader, opt, ex, distill=1.0)
        assert gold > 0 and kl >= 0
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in frozen.items())
    changed = [n for n, v in moving.items() if not torch.equal(now[n], v)]
    assert {"fusion.0.gate", "fusion.0.ffn_gate", "fusion.1.gate", "fusion.1.ffn_gate"} <= set(changed)
    assert any(n.startswith("fusion.1.ffn.") for n in changed) and any(n.startswith("vision.") for n in changed)


def test_fusion_variants_keep_the_reader_unchanged_where_they_must(reader, tiny_dir, tmp_path):  # noqa: F811
    model = reader.model
    model.config.question_free_layers = 1
    with pytest.raises(FusionLayerError, match="pick layers"):
        attach_fusion(model, [-1])
    plain_start, _ = reader.logits(DOC, QUESTION)
    image = DocumentImage(Image.new("RGB", (40, 30), (200, 20, 20)), anchor=0, name="first")
    prepared = reader.prepare(DOC, [image])
    assert prepared.inputs.num_chunks >= 5
    attach_fusion(model, [0, 1], vision=small_encoder(), ffn=True)
    start, _ = reader.logits(prepared, QUESTION)
    assert torch.equal(start, plain_start)                           # gates at 0: bitwise the text reader
    attach_fusion(model, [1], vision=small_encoder(), ffn=True, context=4)   # after the last layer, bilinear match
    with torch.no_grad():
        for name, p in model.fusion.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.8)
    opened, _ = reader.logits(prepared, QUESTION)
    far = torch.as_tensor(prepared.inputs.token_chunk) >= 2          # image in chunk 0: chunks >= 2 see no patch
    assert far.any() and not torch.equal(opened, plain_start)
    assert torch.equal(opened[far], plain_start[far])               # rows with no image in range are untouched
    with closed_gates(model):
        closed, _ = reader.logits(prepared, QUESTION)
    assert torch.equal(closed, plain_start)
    again, _ = reader.logits(prepared, QUESTION)
    assert torch.equal(again, opened)                                # gates restored
    save_fusion(model, tmp_path / "f.safetensors")
    fresh = load(tiny_dir, summary_tokens=True, chunk_size=48, ocr=False)
    fresh.model.config.question_free_layers = 1
    vision = dict(image_size=32, patch_size=8, width=32, heads=2)
    load_fusion(fresh.model, tmp_path / "f.safetensors", vision_config=vision)
    assert int(fresh.model.fusion["1"].context) == 4                 # the match sub-block is read back
    reloaded, _ = fresh.logits(fresh.prepare(DOC, [image]), QUESTION)
    torch.testing.assert_close(reloaded, opened)


def test_left_mean_matches_its_definition():
    x = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(0))
    ref = torch.stack([x[:, max(0, i - 3):i + 1].mean(1) for i in range(9)], dim=1)
    torch.testing.assert_close(left_mean(x, 4), ref)


def test_cached_training_path_is_the_readers_answer_path(reader):
    model = reader.model
    model.config.question_free_layers = 1
    attach_fusion(model, [1], vision=small_encoder(), ffn=True, context=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.fusion.named_parameters():
            p.add_(0.5 if name.endswith("gate") else 0.05 * torch.randn_like(p))
    doc, = cache_documents(reader, random.Random(2), 1, 160, 4)
    prepared = reader.prepare(doc.text)
    chunk = prepared.inputs.token_chunk
    assert chunk.max() >= 3 and len(doc.owners) == 4
    rng = random.Random(0)
    images, chunks = [crate_image("red", "circle", rng), texture_image(rng)], torch.tensor([int(chunk.max()), 0])
    anchors = [int(prepared.tokens.offsets[int((chunk == c).argmax()), 0]) for c in chunks.tolist()]
    docs_images = [DocumentImage(im, anchor=a, name=str(i)) for i, (im, a) in enumerate(zip(images, anchors))]
    with torch.no_grad():
        cached_start, cached_end = fused_logits(model, doc, images, chunks)
    full_start, full_end = reader.logits(reader.prepare(doc.text, docs_images), "Who owns the crate in the picture?")
    torch.testing.assert_close(cached_start, full_start, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_end, full_end, atol=1e-4, rtol=1e-4)
    plain_start, _ = reader.logits(doc.text, "Who owns the crate in the picture?")
    assert not torch.allclose(full_start, plain_start)
    loss, hit = cached_loss(model, doc, rng, max_images=2)
    assert loss.requires_grad and loss.item() > 0 and hit in (True, False)
