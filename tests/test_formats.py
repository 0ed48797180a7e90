"""PDF and HTML ingestion: text per page with exact page numbers, figures and page renders for
the image path, encrypted / truncated / corrupt files, HTML block structure and charset,
a hypothesis fuzz of HTML extraction, and exact answers on both formats.

PDFs are built here with fpdf2; nothing is downloaded."""
from __future__ import annotations

import base64
import io
import re
import warnings
from html import escape
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _tiny_reader import build_tiny_checkpoint

from longread import Reader, files, formats
from longread.document import load_document
from longread.errors import (DocumentReadError, EmptyDocumentError, EncryptedDocumentError, ImageSkippedWarning,
                             LongreadError)
from longread.formats import html_text, load_html, load_pdf
from longread.vision.pipeline import reading_text

fpdf = pytest.importorskip("fpdf")
Image = pytest.importorskip("PIL.Image")

PAGES = ["Galileo Galilei was born in Pisa in 1564.",
         "The telescope showed the moons of Jupiter to him.",
         "He died in Arcetri near Florence in 1642."]


def png_bytes(size=(48, 32), color=(200, 30, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def make_pdf(pages, figure_on=None, image_only_page=False, method="RC4", **encryption) -> bytes:
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=12)
    for i, text in enumerate(pages, 1):
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
        if figure_on == i:
            pdf.image(io.BytesIO(png_bytes()), x=20, y=60, w=30)
    if image_only_page:
        pdf.add_page()
        pdf.image(io.BytesIO(png_bytes((60, 60), (20, 90, 200))), x=10, y=10, w=100)
    if encryption:
        pdf.set_encryption(encryption_method=getattr(fpdf.enums.EncryptionMethod, method), **encryption)
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    torch.set_num_threads(1)
    return Reader.from_pretrained(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny")), device="cpu",
                                  dtype=torch.float32, top_k=8)


# ------------------------------------------------------------------------------------- PDF

def test_pdf_text_per_page_and_page_numbers(tmp_path):
    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(PAGES))
    doc = load_document(path)
    assert doc.source == str(path) and len(doc.page_starts) == 3 and doc.images == []
    for number, sentence in enumerate(PAGES, 1):
        at = doc.text.index(sentence)
        assert doc.page_of(at) == number and doc.page_of(at + len(sentence) - 1) == number
        assert at == doc.page_starts[number - 1]
    assert load_document(str(path)).text == doc.text          # a path given as a string


def test_pdf_figures_and_page_renders(tmp_path):
    path = tmp_path / "figures.pdf"
    path.write_bytes(make_pdf(PAGES[:2], figure_on=2, image_only_page=True))
    doc = load_pdf(path)
    figures = [im for im in doc.images if im.name != "page 3"]
    renders = [im for im in doc.images if im.name == "page 3"]
    # the embedded figure of page 2, anchored at the start of page 2, decodes to the original image
    assert [(im.page, im.anchor) for im in figures if im.page == 2] == [(2, doc.page_starts[1])]
    fig = Image.open(io.BytesIO(next(im.data for im in figures if im.page == 2))).convert("RGB")
    assert fig.size == (48, 32) and fig.getpixel((10, 10)) == (200, 30, 40)
    # page 3 has no text layer: rendered (A4 at 150 dpi) for OCR, in place of its own figure (the
    # render holds it: listing both would read its text twice)
    assert len(renders) == 1 and renders[0].page == 3 and renders[0].anchor == doc.page_starts[2]
    assert [im.page for im in figures] == [2]
    page = Image.open(io.BytesIO(renders[0].data))
    assert abs(page.width - 210 / 25.4 * 150) < 3 and abs(page.height - 297 / 25.4 * 150) < 3
    assert page.convert("RGB").getpixel((int(page.width * 0.3), int(page.height * 0.1))) == (20, 90, 200)
    assert doc.text.endswith("\n\n") and doc.page_of(len(doc.text)) == 3
    every = load_pdf(path, render_pages="all")
    assert sorted(im.name for im in every.images if im.name.startswith("page ") and ":" not in im.name) == \
        ["page 1", "page 2", "page 3"]
    assert load_pdf(path, images=False).images == []
    unrendered = load_pdf(path, render_pages="none").images
    assert unrendered[:1] == figures and [im.page for im in unrendered] == [2, 3]
    with pytest.raises(ValueError, match="render_pages"):
        load_pdf(path, render_pages="some")


def test_rendered_page_replaces_its_figures(monkeypatch):
    data = make_pdf(PAGES[:1], image_only_page=True)
    assert [im.name for im in load_pdf("scan.pdf", data=data).images] == ["page 2"]     # not its figure as well
    monkeypatch.setattr(formats, "_render_pages", lambda *args: {})     # not rendered after all: the figure
    [figure] = load_pdf("scan.pdf", data=data).images
    assert figure.page == 2 and figure.name.startswith("page 2: ")


def test_huge_pdf_pages_are_rendered_within_the_pixel_bound(monkeypatch):
    huge = fpdf.FPDF(unit="pt", format=(14400, 14400))         # the largest page PDF allows; 791 bytes
    huge.add_page()
    with pytest.warns(UserWarning, match=r"page 1 is 14400 x 14400 pt; rendered at 20\.\d dpi instead of 150"):
        [page] = load_pdf("huge.pdf", data=bytes(huge.output())).images
    width, height = Image.open(io.BytesIO(page.data)).size
    assert width == height > 4000 and width * height <= formats.MAX_RENDER_PIXELS
    monkeypatch.setattr(formats, "MAX_RENDER_PIXELS", 100_000)
    for size in [(595, 842), (14400, 20), (20, 14400)]:
        odd = fpdf.FPDF(unit="pt", format=size)
        odd.add_page()
        with pytest.warns(UserWarning, match="rendered at"):
            [page] = load_pdf("odd.pdf", data=bytes(odd.output())).images
        width, height = Image.open(io.BytesIO(page.data)).size
        assert width * height <= 100_000 and (width > height) == (size[0] > size[1])


def test_scanned_and_empty_pdfs(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_pdf([], image_only_page=True))
    assert load_document(path).text.strip() == "" and load_document(path).images
    with pytest.raises(EmptyDocumentError, match="empty"):
        load_document(load_pdf(path, images=False))
    import pypdf

    no_pages = tmp_path / "no_pages.pdf"
    with open(no_pages, "wb") as f:
        pypdf.PdfWriter().write(f)
    with pytest.raises(EmptyDocumentError, match="no_pages.pdf"):
        load_document(no_pages)


def test_encrypted_pdf(tmp_path):
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(make_pdf(PAGES, owner_password="owner", user_password="open sesame"))
    for call, words in [(lambda: load_document(locked), ["encrypted", "password", "--password"]),
                        (lambda: load_pdf(locked, password="wrong"), ["wrong"])]:
        with pytest.raises(EncryptedDocumentError) as info:
            call()
        assert isinstance(info.value, DocumentReadError)
        assert all(w in str(info.value) for w in words), str(info.value)
    assert PAGES[1] in load_pdf(locked, password="open sesame").text
    owner_only = tmp_path / "owner_only.pdf"                  # restrictions but no user password
    owner_only.write_bytes(make_pdf(PAGES, owner_password="owner"))
    assert PAGES[2] in load_document(owner_only).text


def test_aes_encrypted_pdf(tmp_path, monkeypatch):
    pytest.importorskip("cryptography", reason="AES-encrypted PDFs are written and read with 'cryptography'")
    locked = tmp_path / "aes.pdf"
    locked.write_bytes(make_pdf(PAGES, method="AES_128", owner_password="o", user_password="u"))
    assert PAGES[0] in load_pdf(locked, password="u").text
    with pytest.raises(EncryptedDocumentError, match="password"):
        load_document(locked)
    from pypdf._crypt_providers import _fallback                 # what pypdf uses without 'cryptography'

    monkeypatch.setattr("pypdf._encryption.CryptAES", _fallback.CryptAES)
    with pytest.raises(EncryptedDocumentError, match="pip install cryptography"):
        load_pdf(locked, password="u")


def test_truncated_and_corrupt_pdfs(tmp_path):
    data = make_pdf(PAGES)
    cases = {"truncated.pdf": data[: len(data) // 2], "header_only.pdf": data[:20],
             "garbage.pdf": b"this is not a PDF at all", "empty.pdf": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DocumentReadError) as info:
            load_document(tmp_path / name)
        message = str(info.value)
        assert name in message and "corrupt" in message and "repair" in message, message


def test_pdf_found_by_content_and_unreadable_files(tmp_path, monkeypatch):
    odd = tmp_path / "report.bin"
    odd.write_bytes(make_pdf(PAGES))
    assert PAGES[0] in load_document(odd).text
    for suffix in (".pdf", ".html", ".txt"):
        path = tmp_path / f"private{suffix}"
        path.write_bytes(b"x")

        def refuse(*args, _path=path, **kwargs):
            raise PermissionError(13, "Permission denied", str(_path))

        monkeypatch.setattr(Path, "read_bytes", refuse)
        monkeypatch.setattr(files, "open", refuse, raising=False)          # text files are read by longread.files
        with pytest.raises(DocumentReadError, match="Permission denied.*may read it"):
            load_document(path)
        monkeypatch.undo()


def test_answers_on_a_pdf_are_exact_and_paged(reader, tmp_path):
    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(PAGES * 2))
    doc = load_document(path)
    ranges = [(doc.text.index(p, s), doc.text.index(p, s) + len(p)) for p, s in zip(PAGES * 2, doc.page_starts)]
    ans = reader.answer(path, "Where was Galileo born?")
    for a in [ans] + ans.alternatives:
        assert doc.text[a.start:a.end] == a.text
        assert [i + 1 for i, (lo, hi) in enumerate(ranges) if lo <= a.start < hi] == [a.page]
    assert len({a.page for a in [ans] + ans.alternatives}) > 1


# ------------------------------------------------------------------------------------ HTML

PAGE = """<!DOCTYPE html><html><head><meta charset="windows-1252"><title>A  caf\xe9 page</title>
<style>p { color: red }</style><script>var hidden = "script text";</script></head>
<body><h1>Heading &amp; more</h1><p>First   paragraph with <b>bold</b>
and <a href="#x">a link</a>.</p><!-- a comment -->
<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>
<pre>  keep
   this</pre>line<br>break <img src="data:image/png;base64,{png}" alt="chart"> after&nbsp;it
<img src="fig.png" alt="local"><img src="https://example.org/x.png" alt="remote"><noscript>no</noscript>
<div hidden>hidden text</div>
</body></html>"""


def test_html_block_structure_charset_and_images(tmp_path):
    import base64

    (tmp_path / "fig.png").write_bytes(png_bytes((7, 5)))
    path = tmp_path / "page.html"
    path.write_bytes(PAGE.replace("{png}", base64.b64encode(png_bytes((9, 9))).decode()).encode("cp1252"))
    doc = load_document(path)
    assert doc.text == ("A caf\xe9 page\n\nHeading & more\n\nFirst paragraph with bold and a link.\n\n"
                        "one\ntwo\n\na b\nc d\n\n  keep\n   this\n\nline\nbreak after\xa0it")
    assert [im.name for im in doc.images] == ["chart", "local"]           # the remote one is not fetched
    assert doc.text[doc.images[0].anchor:].startswith("after")
    assert Image.open(io.BytesIO(doc.images[0].data)).size == (9, 9)
    assert Image.open(io.BytesIO(doc.images[1].data)).size == (7, 5)
    assert doc.page_starts == [0] and doc.source == str(path)
    assert load_html(path, images=False).images == []
    with pytest.raises(EmptyDocumentError):
        load_document(_write(tmp_path / "blank.htm", "<html><script>x()</script><p> \n </p></html>"))
    with pytest.raises(DocumentReadError, match="too deeply"):
        load_document(_write(tmp_path / "deep.html", "<div>" * 5000 + "x" + "</div>" * 5000))


def test_html_image_after_the_last_text_anchors_at_the_end(tmp_path):
    logo = base64.b64encode(png_bytes((16, 8))).decode()
    path = _write(tmp_path / "page.html", f'<p>Only paragraph.</p><footer><img src="data:image/png;base64,{logo}" '
                                          'alt="logo"></footer>')
    doc = load_document(path)
    assert doc.text == "Only paragraph." and [(im.name, im.anchor) for im in doc.images] == [("logo", len(doc.text))]
    reading = reading_text(doc, ocr=False)
    assert reading.document.text == doc.text and reading.anchors == [len(doc.text)]


def test_html_unreadable_images_are_left_out(tmp_path):
    (tmp_path / "readme.png").write_text("plain text named like an image")
    srcs = {"svg": "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20width='9'%20height='9'/%3E",
            "fake": "readme.png",
            "truncated": "data:image/png;base64," + base64.b64encode(png_bytes((40, 40))[:60]).decode(),
            "bad64": "data:image/png;base64,abcde",
            "good": "data:image/png;base64," + base64.b64encode(png_bytes((9, 9))).decode()}
    tags = "".join(f'<img src="{s}" alt="{a}">' for a, s in srcs.items())
    path = _write(tmp_path / "page.html", f"<p>Before.</p>{tags}<p>After.</p>")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        doc = load_document(path)
    assert doc.text == "Before.\n\nAfter." and [im.name for im in doc.images] == ["good"]
    messages = [str(w.message) for w in record if issubclass(w.category, ImageSkippedWarning)]
    for alt in ("svg", "fake", "truncated", "bad64"):
        assert any(f"image '{alt}' left out" in m and str(path) in m for m in messages), (alt, messages)
    assert not any("plain text" in m for m in messages)
    assert reading_text(doc, ocr=False).document.text == doc.text


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


HTML_SPACE = re.compile(r"[ \t\n\r\f]+")
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=6), st.sampled_from(["p", "div", "h2", "li"]))
def test_html_extraction_fuzz(paragraphs, tag):
    """Arbitrary Unicode paragraphs come back whole: whitespace collapsed as a browser does,
    markup characters unescaped, one blank line between blocks."""
    markup = "<body>" + "".join(f"<{tag}>{escape(p)}</{tag}>" for p in paragraphs) + "</body>"
    text, _ = html_text(markup)
    blocks = [HTML_SPACE.sub(" ", p).strip(" \t\n\f") for p in paragraphs]
    sep = "\n" if tag == "li" else "\n\n"
    assert text == sep.join(b for b in blocks if b)


def test_answers_on_html_are_exact(reader, tmp_path):
    path = _write(tmp_path / "doc.html", "<h1>Title</h1>" + "".join(f"<p>{escape(p)} &lt;ok&gt;</p>" for p in PAGES))
    before = path.read_bytes()
    doc = load_document(path)
    ans = reader.answer(path, "Who died in Arcetri?")
    for a in [ans] + ans.alternatives:
        assert doc.text[a.start:a.end] == a.text and a.page == 1
    assert path.read_bytes() == before
    assert isinstance(EncryptedDocumentError("x"), LongreadError)
