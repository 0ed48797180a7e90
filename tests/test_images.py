"""Images in documents: loading, every bad-input behaviour, anchors, and the reader end to end.

Images are made with Pillow in memory; expected pixels are computed independently with numpy.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw, ImageFile  # noqa: E402

from longread.document import Document, DocumentImage, load_document  # noqa: E402
from longread.errors import ImageAnchorError, ImageReadError, ImageTooLargeError, LongreadError  # noqa: E402
from longread.vision.images import MAX_SIDE, load_images  # noqa: E402
from longread.vision.reading import build_reading_text  # noqa: E402
from longread.vision.ocr import OCRLine  # noqa: E402


def encode(img, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def one(img_or_bytes, text="Some text here.", **kw):
    return load_images(load_document(text), [DocumentImage(img_or_bytes, **kw)])[0]


RED = Image.new("RGB", (12, 8), (200, 10, 30))


def test_bytes_path_pil_and_document_image_agree(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(encode(RED))
    doc = load_document("Alpha beta.")
    loaded = load_images(doc, [encode(RED), str(path), path, RED, DocumentImage(encode(RED), name="fig")])
    for im in loaded:
        assert im.image.mode == "RGB" and im.image.size == (12, 8)
        assert np.array_equal(np.asarray(im.image), np.asarray(RED))
        assert im.anchor == len(doc.text) and im.page == 1 and im.scale == 1.0
    assert [im.index for im in loaded] == list(range(5))
    assert loaded[1].name == str(path) and loaded[4].name == "fig" and loaded[0].name == "image 0"


@pytest.mark.parametrize("data, what", [
    (b"", "empty"),
    (b"not an image at all", "garbage"),
    (encode(RED)[:40], "truncated png"),
    (encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200], "truncated jpeg"),
    (encode(RED)[:8] + bytes(200), "corrupt png"),
])
def test_corrupt_or_truncated_is_a_typed_error_naming_the_image(data, what):
    with pytest.raises(ImageReadError, match="'scan-7'") as info:
        one(data, name="scan-7")
    assert isinstance(info.value, LongreadError)


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        one(str(tmp_path / "nope.png"))
    with pytest.raises(TypeError, match="bytes, a path, a PIL image"):
        one(12345)
    with pytest.raises(TypeError, match="list of images"):
        load_images(load_document("Text."), encode(RED))


def test_cmyk_is_converted_like_pillow():
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))              # pure red in CMYK
    im = one(encode(cmyk, "JPEG", quality=100))
    assert im.original_mode == "CMYK" and im.image.mode == "RGB"
    r, g, b = np.asarray(im.image, dtype=int).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_is_rescaled_to_its_range():
    a = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    im = one(encode(Image.fromarray(a)))
    assert im.original_mode.startswith("I")
    expected = np.round((a - 0.0) * 255.0 / 65535).astype(np.uint8)
    got = np.asarray(im.image)
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 0], got[..., 2])


def test_alpha_is_composited_on_white():
    a = np.zeros((2, 2, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 255)        # opaque red
    a[0, 1] = (0, 0, 255, 0)          # fully transparent -> white
    a[1, 0] = (0, 0, 0, 128)          # half black -> grey
    a[1, 1] = (0, 255, 0, 255)
    im = one(encode(Image.fromarray(a, "RGBA")))
    got = np.asarray(im.image, dtype=int)
    assert tuple(got[0, 0]) == (255, 0, 0) and tuple(got[0, 1]) == (255, 255, 255)
    assert all(abs(c - 127) <= 1 for c in got[1, 0]) and tuple(got[1, 1]) == (0, 255, 0)


def test_palette_with_transparency_and_greyscale():
    p = Image.new("P", (3, 3), 0)
    p.putpalette([10, 20, 30] + [200, 100, 0] * 255)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    got = np.asarray(one(encode(p)).image, dtype=int)
    assert tuple(got[0, 0]) == (255, 255, 255) and tuple(got[1, 1]) == (200, 100, 0)
    grey = np.asarray(one(Image.new("L", (2, 2), 77)).image)
    assert (grey == 77).all()


def test_huge_images_are_resized_keeping_aspect():
    wide = Image.new("RGB", (MAX_SIDE * 3, 30), (5, 6, 7))
    im = one(wide)
    assert im.image.size == (MAX_SIDE, 10) and im.original_size == (MAX_SIDE * 3, 30)
    assert im.scale == pytest.approx(1 / 3)
    small = load_images(load_document("x y"), [wide], max_side=100)[0]
    assert small.image.size == (100, 1)


def test_decompression_bomb_is_a_typed_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(ImageReadError, match="safe limit"):
        one(encode(Image.new("RGB", (20, 20))))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_header_declaring_too_many_pixels_is_refused_before_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    for size in [(9000, 9000), (100_000, 100_000)]:        # 81 M pixels: under Pillow's own limit; 10 G: over it
        with pytest.raises(ImageTooLargeError, match="'bomb'.*safe limit") as info:
            one(png_header(*size), name="bomb")
        assert isinstance(info.value, ImageReadError)
    assert decoded == []


def test_loaded_images_are_kept_encoded_and_decoded_on_use():
    scan = Image.new("RGB", (1240, 1754), "white")           # a page scanned at 150 dpi: 6.5 MB as RGB
    ImageDraw.Draw(scan).text((100, 100), "Ledger of the harbour, page 7", fill="black")
    loaded = load_images(load_document("Scanned."), [scan, scan, encode(scan), encode(scan)])
    for im in loaded:
        assert isinstance(im.png, bytes) and len(im.png) < 200_000 and im.size == (1240, 1754)
        assert not any(isinstance(v, Image.Image) for v in vars(im).values())     # nothing decoded is kept
        assert np.array_equal(np.asarray(im.image), np.asarray(scan))
    assert loaded[2].png is loaded[3].png                    # the same file is decoded once


def test_anchors_offsets_pages_and_defaults():
    doc = load_document(["Page one text.", "Page two text.", "Page three."])
    loaded = load_images(doc, [DocumentImage(RED, anchor=3), DocumentImage(RED, page=2),
                               DocumentImage(RED), RED, DocumentImage(RED, anchor=len(doc.text))])
    assert [im.anchor for im in loaded] == [3, doc.page_starts[1], len(doc.text), len(doc.text), len(doc.text)]
    assert [im.page for im in loaded] == [1, 2, 3, 3, 3]


@pytest.mark.parametrize("kw", [dict(anchor=-1), dict(anchor=10_000), dict(page=0), dict(page=4)])
def test_anchor_outside_the_document_is_a_typed_error(kw):
    doc = load_document(["Page one.", "Page two.", "Page three."])
    with pytest.raises(ImageAnchorError, match="'fig'"):
        load_images(doc, [DocumentImage(RED, name="fig", **kw)])
    with pytest.raises(TypeError, match="anchor must be an int"):
        load_images(doc, [DocumentImage(RED, anchor="3")])


def test_document_images_come_first():
    doc = Document(text="Hello world.", images=[DocumentImage(RED, anchor=5, name="own")])
    loaded = load_images(doc, [DocumentImage(RED, name="extra")])
    assert [(im.index, im.name, im.anchor) for im in loaded] == [(0, "own", 5), (1, "extra", 12)]
    assert load_images(load_document("x"), None) == [] and load_images(load_document("x"), []) == []


def test_reading_text_inserts_ocr_lines_at_anchors_and_maps_back():
    doc = load_document(["First page here.", "Second page."])
    imgs = load_images(doc, [DocumentImage(RED, anchor=6, name="a"), DocumentImage(RED, page=2, name="b"),
                             DocumentImage(RED, anchor=6, name="c"), DocumentImage(RED, name="blank")])
    ocr = {0: [OCRLine("Owner Marta", (1, 2, 5, 4), 0.9), OCRLine("Crate 7", (1, 5, 6, 8), 0.9)],
           1: [OCRLine("Blue", (0, 0, 3, 3), 0.9)], 2: [OCRLine("Zed", (2, 2, 3, 3), 0.9)]}
    r = build_reading_text(doc, imgs, ocr)
    expected = ("First \n\nOwner Marta\nCrate 7\n\n\n\nZed\n\npage here.\n\n"
                "\n\nBlue\n\nSecond page.")
    assert r.document.text == expected
    assert r.document.page_starts == [0, expected.index("\n\nBlue")]
    for ln in r.lines:
        assert r.document.text[ln.start:ln.end] in ("Owner Marta", "Crate 7", "Blue", "Zed")
    s = expected.index("Marta")
    assert r.locate(s, s + 5) == (0, "a", (1, 2, 5, 4))
    s2 = expected.index("Crate 7") + 7
    assert r.locate(s, s2) == (0, "a", (1, 2, 6, 8))                       # two lines: union box
    assert r.locate(0, 5) is None and r.locate(s, expected.index("page here")) is None
    z = expected.index("Zed")
    assert r.locate(z, z + 3)[:2] == (2, "c")
    # offsets outside the blocks map back to the original text; inside a block, to its anchor
    p = expected.index("page here")
    assert r.to_original(p) == doc.text.index("page here") and r.to_original(s) == 6
    assert r.to_original(expected.index("Second")) == doc.text.index("Second")
    assert r.anchors == [6, expected.index("\n\nBlue"), expected.index("\n\nZed"), len(expected)]
