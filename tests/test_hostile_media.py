"""Hostile images and HTML: thin, empty and huge images never reach the OCR engine unbounded (it is
replaced by a recording stand-in here), and an HTML document reads local images only from its own
folder and below, only regular files, never echoing what it read.

Inputs are built here with Pillow, fpdf2 and bytes; nothing is downloaded."""
from __future__ import annotations

import base64
import io
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest

Image = pytest.importorskip("PIL.Image")

from longread import formats  # noqa: E402
from longread.document import DocumentImage, load_document  # noqa: E402
from longread.errors import ImageSkippedWarning  # noqa: E402
from longread.formats import html_text, load_html  # noqa: E402
from longread.vision import ocr as ocr_module  # noqa: E402
from longread.vision.ocr import MAX_ASPECT_RATIO, OCR_MAX_SIDE, read_text  # noqa: E402
from longread.vision.pipeline import reading_text  # noqa: E402


def png(size, color="white") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class RecordingEngine:
    """Stands in for RapidOCR: records the shape of every array it is given and finds one line
    ``text`` covering its whole input (``text=None``: nothing), or raises ``fail``."""

    def __init__(self, text=None, fail=None):
        self.text, self.fail, self.shapes, self.last = text, fail, [], None

    def __call__(self, bgr):
        self.shapes.append(bgr.shape)
        self.last = bgr
        if self.fail is not None:
            raise self.fail
        if self.text is None:
            return None, None
        h, w = bgr.shape[:2]
        return [[[[0, 0], [w, 0], [w, h], [0, h]], self.text, 0.99]], [0.0]


@pytest.fixture
def engine(monkeypatch):
    spy = RecordingEngine()
    monkeypatch.setattr(ocr_module, "_ENGINE", spy)
    monkeypatch.setattr(ocr_module, "_CACHE", OrderedDict())
    return spy


def skipped(record) -> list:
    return [str(w.message) for w in record if issubclass(w.category, ImageSkippedWarning)]


# ------------------------------------------------------------------------------- OCR input bounds

HAIRLINE = png((1600, 1))                      # an HTML hairline: 87 bytes of PNG


def test_thin_and_empty_images_never_reach_the_engine(engine):
    doc = load_document("A page with rules between its paragraphs.")
    images = [DocumentImage(HAIRLINE, name="hairline"), DocumentImage(png((2048, 8)), name="rule"),
              DocumentImage(png((1, 5000)), name="strip"), DocumentImage(Image.new("RGB", (0, 0)), name="empty")]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        reading = reading_text(doc, images)
    assert engine.shapes == []
    assert reading.document.text == doc.text and [im.name for im in reading.images] == ["hairline", "rule", "strip"]
    messages = skipped(record)
    for name in ("hairline", "rule", "strip"):
        assert any(f"'{name}'" in m and "too thin" in m for m in messages), messages
    assert any("'empty'" in m and "no pixels" in m for m in messages), messages


@pytest.mark.parametrize("size", [(2000, 12), (12, 2000), (5000, 3000), (2048, 2048), (640, 40), (40, 40)])
def test_engine_input_is_bounded_and_boxes_map_back(engine, size):
    engine.text = "found"
    [line] = read_text(Image.new("RGB", size, (250, 250, 245)))
    (h, w, _), = engine.shapes
    assert max(h, w) <= OCR_MAX_SIDE and max(h, w) <= MAX_ASPECT_RATIO * min(h, w)
    # the stand-in's box covers its whole (scaled, padded) input: back in the image, the whole image
    assert line.box == pytest.approx((0, 0, size[0], size[1]))


def test_padding_takes_the_border_colour(engine):
    engine.text = "found"
    read_text(Image.new("RGB", (800, 20), (20, 30, 90)))
    assert engine.shapes == [(200, 800, 3)] and tuple(engine.last[150, 400]) == (90, 30, 20)     # BGR


def test_engine_failure_skips_that_image_only(engine):
    engine.fail = RuntimeError("the engine cannot take this")
    doc = load_document("Text before the figure. Text after it.")
    with pytest.warns(ImageSkippedWarning, match="'chart'.*OCR engine failed.*RuntimeError"):
        reading = reading_text(doc, [DocumentImage(png((64, 48)), anchor=5, name="chart")])
    assert reading.document.text == doc.text and len(reading.images) == 1


def test_hairline_through_html_and_pdf_figures(engine, tmp_path):
    fpdf = pytest.importorskip("fpdf")
    page = tmp_path / "page.html"
    page.write_text(f'<p>Intro.</p><img src="{data_uri(HAIRLINE)}" alt="rule"><p>Body text.</p>')
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 8, "A page of text with a hairline under it.")
    pdf.image(io.BytesIO(HAIRLINE), x=10, y=40, w=190, h=0.2)
    report = tmp_path / "report.pdf"
    report.write_bytes(bytes(pdf.output()))
    for path in (page, report):
        doc = load_document(path)
        assert len(doc.images) == 1
        with pytest.warns(ImageSkippedWarning, match="too thin"):
            assert reading_text(doc).document.text == doc.text
    assert engine.shapes == []


# ---------------------------------------------------------------------------- HTML local images

def test_html_local_images_only_from_the_documents_folder(tmp_path, monkeypatch):
    site, outside = tmp_path / "site", tmp_path / "outside"
    (site / "img").mkdir(parents=True)
    outside.mkdir()
    (site / "img" / "ok.png").write_bytes(png((8, 6), "red"))
    (outside / "secret.png").write_bytes(png((5, 5), "blue"))            # a valid image, but elsewhere
    (site / "notes.txt").write_text("TOPSECRET-4711 is not an image")
    (site / "inner.png").symlink_to(site / "img" / "ok.png")
    (site / "escape.png").symlink_to(outside / "secret.png")
    os.mkfifo(site / "pipe.png")
    with open(site / "huge.png", "wb") as f:                            # sparse: no disk used
        f.truncate(formats.MAX_IMAGE_BYTES + 1)
    monkeypatch.setenv("LONGREAD_TEST_MARK", "ENVSECRET-0815")
    srcs = {"ok": "img/ok.png", "inner": "inner.png", "escape": "escape.png", "up": "../outside/secret.png",
            "absolute": str(outside / "secret.png"), "url": (outside / "secret.png").as_uri(),
            "environ": "/proc/self/environ", "zero": "/dev/zero", "pipe": "pipe.png", "huge": "huge.png",
            "notes": "notes.txt", "missing": "img/none.png", "remote": "https://example.org/x.png",
            "protocol-relative": "//example.org/x.png"}
    page = site / "page.html"
    page.write_text("<p>Gallery.</p>" + "".join(f'<img src="{s}" alt="{a}">' for a, s in srcs.items())
                    + "<p>End.</p>")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        doc = load_html(page)
    assert [im.name for im in doc.images] == ["ok", "inner"]
    assert all(Image.open(io.BytesIO(im.data)).size == (8, 6) for im in doc.images)
    messages = skipped(record)
    reasons = {"escape": "outside the document's folder", "up": "outside", "absolute": "outside", "url": "outside",
               "environ": "outside", "zero": "outside", "pipe": "not a regular file", "huge": "larger than",
               "notes": "not an image", "missing": "cannot be read"}
    for alt, reason in reasons.items():
        assert any(f"'{alt}'" in m and reason in m for m in messages), (alt, messages)
    assert not any("remote" in m or "protocol-relative" in m for m in messages)   # never fetched, silently
    assert not any("TOPSECRET" in m or "ENVSECRET" in m for m in messages)
    assert load_html(page, images=False).images == []


def test_html_at_the_filesystem_root_still_reads_no_system_file():
    with pytest.warns(ImageSkippedWarning, match="under /proc, /sys or /dev"):
        _, images = html_text('<p>x</p><img src="proc/self/environ" alt="env">', base=Path("/"))
    assert images == []


def test_html_markup_without_a_folder_reads_no_local_file(tmp_path):
    (tmp_path / "ok.png").write_bytes(png((4, 4)))
    markup = f'<p>Text.</p><img src="{tmp_path / "ok.png"}" alt="abs"><img src="{(tmp_path / "ok.png").as_uri()}">'
    with pytest.warns(ImageSkippedWarning, match="without its folder"):
        text, images = html_text(markup)
    assert text == "Text." and images == []
    with pytest.warns(ImageSkippedWarning):
        text, images = html_text(markup.replace("<p>", f'<img src="{data_uri(png((3, 3)))}"><p>'))
    assert len(images) == 1 and images[0].name == "data:image/png;base64"         # inline images still read
