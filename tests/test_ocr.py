"""Text inside images: OCR lines with boxes, inserted at the image's anchor, answered end to end
through ``longread.answer(doc, images, question)`` with the answer's image, name and box.

The reader is the tiny random model of test_reader.py turned into an "oracle" that answers from
"zeppelin" to "octopus": where those words are found (text or image) decides the answer.
"""
from __future__ import annotations

import io
import sys

import pytest
import torch

pytest.importorskip("PIL")
pytest.importorskip("rapidocr_onnxruntime")
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

import longread  # noqa: E402
from longread.document import DocumentImage  # noqa: E402
from longread.errors import ImageSkippedWarning, OCRUnavailableError  # noqa: E402
from longread.formats import load_pdf  # noqa: E402
from longread.vision import ocr as ocr_module  # noqa: E402
from longread.vision.ocr import read_text  # noqa: E402
from longread.vision.pipeline import reading_text  # noqa: E402

from test_reader import END_WORD, START_WORD, load, make_oracle, tiny_dir  # noqa: E402,F401

PLANTED = "zeppelin carried a purple octopus"
DOC = "The harbour report lists the cargo of every ship. Nothing unusual was seen on Monday."


def render(text: str, size=(520, 90), at=(14, 26), font_size=30, scale=1):
    """White image with black text; returns the image and the text's exact pixel box."""
    img = Image.new("RGB", (size[0] * scale, size[1] * scale), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size * scale)
    xy = (at[0] * scale, at[1] * scale)
    draw.text(xy, text, fill="black", font=font)
    return img, draw.textbbox(xy, text, font=font)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def oracle_dir(tiny_dir, tmp_path_factory):  # noqa: F811
    r = make_oracle(load(tiny_dir, summary_tokens=True, chunk_size=64))
    path = tmp_path_factory.mktemp("oracle_reader")
    r.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def oracle(oracle_dir):
    return longread.Reader.from_pretrained(oracle_dir, device="cpu", dtype=torch.float32)


def test_read_text_lines_and_boxes():
    img, bbox = render("Owner: Marta Lindqvist")
    lines = read_text(img)
    assert [ln.text for ln in lines] == ["Owner: Marta Lindqvist"]
    assert iou(lines[0].box, bbox) > 0.5 and 0.5 <= lines[0].score <= 1.0
    assert read_text(Image.new("RGB", (64, 64), "white")) == []


def test_thin_images_are_skipped_and_wide_banners_read():
    for size in [(1600, 1), (2048, 8), (1, 5000)]:       # hairline (once 48000 x 12000 in the engine), rule, strip
        with pytest.warns(ImageSkippedWarning, match="'rule'.*too thin"):
            assert read_text(Image.new("RGB", size, "white"), name="rule") == []
    banner, bbox = render("Harbour log 12 lists the cargo", size=(900, 40), at=(10, 4), font_size=26)
    [line] = read_text(banner)                           # 22:1, padded for the engine; the box maps back
    assert line.text == "Harbour log 12 lists the cargo" and iou(line.box, bbox) > 0.5


def test_image_only_pdf_page_is_read_once(tmp_path):
    fpdf = pytest.importorskip("fpdf")
    scan, _ = render("Harbour log 12", size=(620, 120), at=(20, 30), font_size=48)
    png = io.BytesIO()
    scan.save(png, format="PNG")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "The harbour report.")
    pdf.add_page()                                       # no text layer: rendered, and its figure not read again
    pdf.image(png, x=10, y=10, w=150)
    doc = load_pdf("scan.pdf", data=bytes(pdf.output()))
    text = reading_text(doc).document.text
    assert text.count("Harbour log") == 1 and text.index("Harbour log 12") > text.index("The harbour report.")


def test_answer_inside_an_image_end_to_end(oracle_dir):
    img, bbox = render(PLANTED.capitalize(), scale=5)         # 2600 px wide: resized before OCR
    ans = longread.answer(DOC, [DocumentImage(img, anchor=DOC.index("Nothing"), name="cargo.png")],
                          "What did the zeppelin carry?", model=str(oracle_dir), device="cpu",
                          dtype=torch.float32)
    assert ans.text.lower() == PLANTED and ans.source == "image"
    assert ans.image == 0 and ans.image_name == "cargo.png"
    assert iou(ans.box, bbox) > 0.5                            # in the original image's pixels
    reader = longread.Reader.from_pretrained(oracle_dir, device="cpu", dtype=torch.float32)
    prepared = reader.prepare(DOC, [DocumentImage(img, anchor=DOC.index("Nothing"), name="cargo.png")])
    text = prepared.document.text
    assert text[ans.start:ans.end] == ans.text
    assert text.startswith(DOC[:DOC.index("Nothing")]) and text.endswith(DOC[DOC.index("Nothing"):])
    assert prepared.reading.to_original(ans.start) == DOC.index("Nothing")


def test_text_answers_keep_working_with_images(oracle):
    doc = f"Intro sentence here. The {START_WORD} took the {END_WORD} home. Closing words."
    blank = Image.new("RGB", (80, 40), "white")
    plain = oracle.answer(doc, "What?")
    with_blank = oracle.answer(doc, "What?", images=[blank])
    assert (with_blank.text, with_blank.start, with_blank.end, with_blank.source) == \
        (plain.text, plain.start, plain.end, "text")
    # an image with text anchored before the answer shifts offsets into the reading text
    img, _ = render("Harbour log 12")
    shifted = oracle.answer(doc, "What?", images=[DocumentImage(img, anchor=0)])
    prepared = oracle.prepare(doc, [DocumentImage(img, anchor=0)])
    assert shifted.text == plain.text and shifted.source == "text" and shifted.image is None
    assert prepared.document.text[shifted.start:shifted.end] == shifted.text
    assert prepared.reading.to_original(shifted.start) == plain.start
    assert "Harbour log 12" in prepared.document.text[:shifted.start]


def test_zero_images_is_text_only(oracle):
    doc = f"Some words. The {START_WORD} saw an {END_WORD}. More words."
    base = oracle.answer(doc, "What?").to_dict()
    assert oracle.answer(doc, "What?", images=[]).to_dict() == base
    assert oracle.answer(doc, "What?", images=None).to_dict() == base
    assert base["source"] == "text" and base["box"] is None


def test_missing_ocr_engine_is_a_typed_error(monkeypatch):
    monkeypatch.setattr(ocr_module, "_ENGINE", None)
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(OCRUnavailableError, match="pip install"):
        read_text(Image.new("RGB", (8, 8), (1, 2, 3)))


def test_no_span_runs_from_the_text_into_an_image(oracle):
    """The start word in the document text, the end word only inside the image: the span that
    joins them would mix document text with OCR text, so it is never an answer."""
    doc = f"Intro sentence here. The {START_WORD} is shown in the figure. Closing words of the page."
    img, _ = render(f"The {END_WORD} is here", size=(600, 90))
    images = [DocumentImage(img, anchor=doc.index(" is shown") + len(" is shown in the figure."))]
    prepared = oracle.prepare(doc, images)
    text = prepared.document.text
    assert END_WORD in text[text.index("figure."):]                     # the OCR read the end word
    ans = oracle.answer(doc, "What?", images=images, top_k=5)
    blocks = prepared.reading.block_bounds()
    for a in [ans] + ans.alternatives:
        assert text[a.start:a.end] == a.text
        inside = [lo <= a.start and a.end <= hi for lo, hi in blocks]
        outside = [a.end <= lo or a.start >= hi for lo, hi in blocks]
        assert all(i or o for i, o in zip(inside, outside)), (a.text, a.start, a.end, blocks)


def test_default_reader_answers_with_the_value_written_in_the_image():
    """A long filler document that points at a figure, the figure's text read by OCR: the answer
    is the value in the image, and no span runs from the document text into the OCR block."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = "the of harbour river report council market season winter trade ship field north".split()
    sections = [" ".join(rng.choice(words, 40)).capitalize() + "." for _ in range(300)]
    at = 150
    pointer = "The access code is shown in the figure below."
    sections.insert(at, pointer)
    text = "\n\n".join(sections)
    anchor = text.index(pointer) + len(pointer)
    img, _ = render("Vault access code: 7351", size=(640, 90), font_size=36)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    reader = longread.Reader.from_pretrained(device="cpu")
    reader.progress = False
    ans = reader.answer(text, "What is the vault access code?", images=[DocumentImage(buf.getvalue(), anchor=anchor)])
    reading = reader.prepare(text, images=[DocumentImage(buf.getvalue(), anchor=anchor)]).document.text
    assert reading[ans.start:ans.end] == ans.text
    assert ans.source == "image" and "7351" in ans.text
    for a in [ans] + ans.alternatives:                 # never across the text / OCR boundary
        inside = a.source == "image"
        block = reading.index("Vault")
        assert inside == (a.start >= block - 2), (a.text, a.start, block)
