"""Document formats: PDF (pypdf, pages rendered by pypdfium2), HTML (BeautifulSoup), plain text.

Every reader returns a :class:`~longread.document.Document` whose ``text`` is the extracted
text: answer offsets index that text, and ``page_starts`` carries the page numbers. Markdown and
plain text are read verbatim (see ``document.py``), so their offsets index the file itself.

Images go to ``Document.images`` as encoded bytes (PNG or the PDF's own JPEG) anchored at the
start of their page (PDF) or at their place in the text (HTML), for the image path to read. A page
rendered for OCR stands for everything on it: its embedded figures are not listed as well (their
text would be read twice). Limits keep hostile files bounded: a rendered page has at most
``MAX_RENDER_PIXELS`` pixels (a larger page is rendered at a lower scale, checked before rendering),
an HTML image at most ``MAX_IMAGE_BYTES`` bytes, and an HTML document reads local images only from
its own folder and below. An image that is left out is named in an
:class:`~longread.errors.ImageSkippedWarning`, and the rest of the document is read.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import unquote, unquote_to_bytes, urlparse

from .document_types import Document, DocumentImage, join_pages
from .errors import DocumentReadError, EncryptedDocumentError, ImageReadError, ImageSkippedWarning, ImageTooLargeError
from .progress import progress

PDF_MAGIC = b"%PDF-"
RENDER_MODES = ("auto", "all", "none")
# Pixels of one rendered page at most; a larger page (or dpi) is rendered at the scale that fits.
# 4096 x 4096 holds A4 at 400 dpi (a 50 MB bitmap); a PDF page may be 14400 pt square, which is
# 30000 x 30000 pixels (2.7 GB) at 150 dpi.
MAX_RENDER_PIXELS = 4096 * 4096
# Bytes of one HTML image (a local file or a data: URI) at most; larger ones are left out.
MAX_IMAGE_BYTES = 32 * 2 ** 20
# Local images are never read from these, wherever the document is.
_SYSTEM_DIRS = {("/", "proc"), ("/", "sys"), ("/", "dev")}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)


# ------------------------------------------------------------------------------------------ PDF

def _open_pdf(data: bytes, name: str, password: Optional[str]):
    import pypdf
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt(password or "") == pypdf.PasswordType.NOT_DECRYPTED:
            raise EncryptedDocumentError(
                f"{name} is an encrypted PDF and " + ("the password given is wrong" if password else
                                                      "needs a password") +
                "; open it with longread.formats.load_pdf(path, password=...) (command line: --password), "
                "or decrypt the file first")
        len(reader.pages)                                     # parses the page tree
    except DependencyError as exc:
        raise _needs_cryptography(name, exc) from exc
    except (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DocumentReadError(f"{name} is not a readable PDF (truncated or corrupt: {exc}); "
                                "re-export or repair it (e.g. qpdf input.pdf output.pdf) and try again") from exc
    return reader


def _needs_cryptography(name: str, exc: Exception) -> EncryptedDocumentError:
    return EncryptedDocumentError(f"{name} is AES-encrypted and reading it needs the package "
                                  f"'cryptography': pip install cryptography ({exc})")


def _render_pages(data: bytes, numbers: List[int], password: Optional[str], dpi: int, name: str) -> dict:
    """{page index: PNG bytes} for the given 0-based pages, via PDFium, one page at a time (a
    page's bitmap is freed before the next one is rendered)."""
    try:
        import pypdfium2
    except ImportError:
        warnings.warn("pypdfium2 is not installed: PDF pages are not rendered to images "
                      "(pip install pypdfium2)", stacklevel=3)
        return {}
    out = {}
    try:
        pdf = pypdfium2.PdfDocument(data, password=password)
    except pypdfium2.PdfiumError as exc:
        warnings.warn(f"PDF pages not rendered: PDFium cannot open the file ({exc})", stacklevel=3)
        return out
    try:
        for i in progress(numbers, desc="rendering pages", unit="page"):
            page = pdf[i]
            try:
                png = _render_page(page, i + 1, dpi, name)
            finally:
                page.close()
            if png is not None:
                out[i] = png
    except pypdfium2.PdfiumError as exc:
        warnings.warn(f"PDF page {i + 1} and later not rendered ({exc})", stacklevel=3)
    finally:
        pdf.close()
    return out


def _render_page(page, number: int, dpi: int, name: str) -> Optional[bytes]:
    """PNG of one page at ``dpi``, or at the lower scale that keeps it within MAX_RENDER_PIXELS
    (with a warning), decided from the page's size before anything is rendered; None (with a
    warning) for a page without a usable size."""
    width, height = page.get_size()                                          # points
    if not (width > 0 and height > 0 and math.isfinite(width * height)):
        warnings.warn(f"{name}: page {number} has no usable size ({width} x {height} pt); not rendered",
                      ImageSkippedWarning, stacklevel=4)
        return None
    scale = min(dpi / 72, _largest_scale(width, height))
    if scale < dpi / 72:
        warnings.warn(f"{name}: page {number} is {width:.0f} x {height:.0f} pt; rendered at {72 * scale:.1f} dpi "
                      f"instead of {dpi} to stay within {MAX_RENDER_PIXELS:,} pixels", stacklevel=4)
    bitmap = page.render(scale=scale)
    try:
        png = io.BytesIO()
        bitmap.to_pil().save(png, format="PNG")
    finally:
        bitmap.close()
    return png.getvalue()


def _largest_scale(width: float, height: float) -> float:
    """The largest scale s with (width*s + 1) * (height*s + 1) <= MAX_RENDER_PIXELS, which bounds
    the ceil(width*s) x ceil(height*s) bitmap PDFium renders."""
    a, b, c = width * height, width + height, 1 - MAX_RENDER_PIXELS
    return (math.sqrt(b * b - 4 * a * c) - b) / (2 * a)


def load_pdf(path, *, password: Optional[str] = None, images: bool = True,
             render_pages: str = "auto", dpi: int = 150, data: Optional[bytes] = None):
    """Read a PDF: text per page (pages joined by a blank line; ``Document.page_of`` gives the
    1-based page of any offset).

    ``images``: put embedded figures in ``Document.images``; ``render_pages``: ``"auto"``
    renders only pages without a text layer (scans) to PNG for OCR, ``"all"`` every page,
    ``"none"`` none. A rendered page replaces its embedded figures (it shows them), so each page's
    text is read once; a page too large for ``dpi`` is rendered at a lower one (see
    ``MAX_RENDER_PIXELS``). ``password`` opens encrypted files. ``data`` gives the bytes directly.
    """
    if render_pages not in RENDER_MODES:
        raise ValueError(f"render_pages must be one of {RENDER_MODES}, got {render_pages!r}")
    name = str(path)
    data = _read_bytes(Path(path)) if data is None else data
    with _quiet_pypdf():
        return _read_pdf(data, name, password, images, render_pages, dpi)


@contextmanager
def _quiet_pypdf():
    """pypdf logs every damage it recovers from; keep that to errors while a PDF is read."""
    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _read_pdf(data: bytes, name: str, password: Optional[str], images: bool, render_pages: str, dpi: int):
    from pypdf.errors import DependencyError

    reader = _open_pdf(data, name, password)
    texts, figures = [], {}
    try:
        for number, page in enumerate(progress(reader.pages, desc="reading PDF", unit="page"), 1):
            texts.append(page.extract_text() or "")
            if images and not _renders(texts[-1], render_pages):
                figures[number - 1] = _page_figures(page, number, name)
    except DependencyError as exc:
        raise _needs_cryptography(name, exc) from exc
    except Exception as exc:                                  # damage found while reading a page
        raise DocumentReadError(f"{name}: page {len(texts) + 1} cannot be read ({type(exc).__name__}: {exc}); "
                                "re-export or repair the PDF and try again") from exc
    text, starts = join_pages(texts)
    wanted = [i for i, t in enumerate(texts) if _renders(t, render_pages)] if images else []
    rendered = _render_pages(data, wanted, password, dpi, name) if wanted else {}
    for i in wanted:
        if i not in rendered:                                 # not rendered after all: its figures instead
            figures[i] = _page_figures(reader.pages[i], i + 1, name)
    doc_images = []
    for i in range(len(texts)):
        if i in rendered:
            doc_images.append(DocumentImage(rendered[i], anchor=starts[i], page=i + 1, name=f"page {i + 1}"))
        for fig_name, fig_data in figures.get(i, []):
            doc_images.append(DocumentImage(fig_data, anchor=starts[i], page=i + 1, name=fig_name))
    return Document(text=text, page_starts=starts, source=name, images=doc_images)


def _renders(text: str, render_pages: str) -> bool:
    """Whether a page with this text is rendered to an image (see ``load_pdf``)."""
    return render_pages == "all" or (render_pages == "auto" and not text.strip())


def _page_figures(page, number: int, name: str) -> List[Tuple[str, bytes]]:
    """(name, bytes) of a page's embedded images; one whose header declares too many pixels is
    left out with a warning."""
    try:
        found = [(f"page {number}: {img.name}", img.data) for img in page.images]
    except Exception as exc:                                  # an image the decoder cannot handle
        warnings.warn(f"{name}: images of page {number} skipped ({type(exc).__name__}: {exc})", stacklevel=4)
        return []
    return [(fig_name, data) for fig_name, data in found if _image_ok(data, fig_name, name, decode=False)]


def _image_ok(data: bytes, label: str, source: str, decode: bool = True) -> bool:
    """Whether the image path can load ``data``: its header (and, with ``decode``, its pixels). When
    not, a warning names the image and says why, never quoting the bytes."""
    from .vision.images import MAX_IMAGE_PIXELS, decode_rgb, open_image

    try:
        if decode:
            decode_rgb(data, label)
        else:
            open_image(data, label, decode=False)
    except ImageTooLargeError:
        _skip(source, label, f"it has more pixels than the limit of {MAX_IMAGE_PIXELS:,}")
        return False
    except ImageReadError:
        _skip(source, label, "it is not an image Pillow can decode (PNG, JPEG, GIF, BMP, TIFF, WebP), "
                             "or it is truncated")
        return False
    return True


def _skip(source: str, label: str, reason: str) -> None:
    warnings.warn(f"{source}: image {label!r} left out: {reason}", ImageSkippedWarning, stacklevel=2)


# ----------------------------------------------------------------------------------------- HTML

_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "select"}
_BLOCKS = {"address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div",
           "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
           "h6", "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
           "table", "tbody", "thead", "tfoot", "tr", "ul", "title"}
_LINES = {"br", "td", "th", "li", "tr", "dt", "dd"}           # end a line, not a paragraph
_SPACE = re.compile(r"[ \t\n\r\f]+")                          # HTML whitespace (not U+00A0)


class _TextBuilder:
    """Collects text runs and breaks; collapses whitespace like a browser's inline layout."""

    def __init__(self):
        self.parts: List[str] = []
        self.length = 0
        self.pending = ""          # "", " ", "\n" or "\n\n": the strongest break asked for

    def text(self, s: str, pre: bool = False):
        if not pre:
            s = _SPACE.sub(" ", s)
            if s.startswith(" "):
                self.brk(" ")
                s = s[1:]
            trailing = s.endswith(" ")
            s = s[:-1] if trailing else s
        else:
            trailing = False
        if s:
            if self.length and self.pending:
                self._emit(self.pending)
            self.pending = ""
            self._emit(s)
        if trailing:
            self.brk(" ")

    def brk(self, kind: str):
        order = ["", " ", "\n", "\n\n"]
        if order.index(kind) > order.index(self.pending):
            self.pending = kind

    def _emit(self, s: str):
        self.parts.append(s)
        self.length += len(s)

    def offset(self) -> int:
        """Offset where the next text will start (pending break included)."""
        return self.length + (len(self.pending) if self.length else 0)


def html_text(markup, base: Optional[Path] = None, source: str = "HTML", images: bool = True):
    """(text, images) from HTML markup (str or bytes; bytes honour the page's charset).

    Block elements (p, div, h1..h6, li, tr, ...) become paragraphs or lines; scripts, styles and
    the head (except its title) are dropped. ``<img>`` becomes a DocumentImage anchored where it
    stands (at the end of the text when it stands after the last text, like a footer logo) when
    its ``src`` is a ``data:`` URI or a local file in the folder ``base`` or below it (see
    :func:`_local_image`); without ``base`` no local file is read, and remote images are never
    fetched. An image that cannot be used is left out with a warning naming it (in ``source``),
    and the rest is read. ``images=False`` reads no image at all.
    """
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

    soup = BeautifulSoup(markup, "html.parser")
    out, found, sources = _TextBuilder(), [], {}

    def add_image(img):
        src = img.get("src") or ""
        label = img.get("alt") or _label(src)
        if src not in sources:                                # each distinct src is read and checked once
            sources[src] = _image_bytes(src, base, label, source)
        if sources[src] is not None:
            found.append(DocumentImage(sources[src], anchor=out.offset(), page=1, name=label))

    def walk(node, pre: bool):
        for child in node.children:
            if isinstance(child, (Comment, Declaration, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                out.text(str(child), pre)
                continue
            if not isinstance(child, Tag):
                continue
            tag = child.name.lower()
            if tag == "head":
                title = child.find("title")
                if title is not None:
                    out.brk("\n\n")
                    walk(title, False)
                    out.brk("\n\n")
                continue
            if tag in _SKIP or child.has_attr("hidden"):
                continue
            if tag == "img":
                if images:
                    add_image(child)
                continue
            brk = "\n" if tag in _LINES else "\n\n" if tag in _BLOCKS else ""
            if tag == "br":
                out.brk("\n")
                continue
            if tag in ("td", "th"):
                out.brk(" ")
            elif brk:
                out.brk(brk)
            walk(child, pre or tag in ("pre", "textarea"))
            if brk and tag not in ("td", "th"):
                out.brk(brk)

    walk(soup, False)
    text = "".join(out.parts)
    for image in found:                  # offset() counts a pending break the text never got
        image.anchor = min(image.anchor, len(text))
    return text, found


def _label(src: str) -> str:
    """An image's name from its ``src``: a data: URI by its media type, never by its payload."""
    return (src.partition(",")[0] if src.startswith("data:") else src)[:80]


def _image_bytes(src: str, base: Optional[Path], label: str, source: str) -> Optional[bytes]:
    """The bytes of one ``<img src>`` when the image path can load them; None for a remote or empty
    ``src`` (silently) and for an image left out (with a warning)."""
    if src.startswith("data:"):
        data = _data_uri(src, label, source)
    else:
        url = urlparse(src)
        if not src or url.scheme not in ("", "file") or (not url.scheme and url.netloc):
            return None                                       # remote: never fetched
        data = _local_image(url, base, label, source)
    return data if data is not None and _image_ok(data, label, source) else None


def _data_uri(src: str, label: str, source: str) -> Optional[bytes]:
    header, _, payload = src.partition(",")
    try:
        data = base64.b64decode(payload) if header.lower().endswith(";base64") else unquote_to_bytes(payload)
    except ValueError:
        return _skip(source, label, "its data: URI is not valid base64")
    if len(data) > MAX_IMAGE_BYTES:
        return _skip(source, label, f"it is larger than {MAX_IMAGE_BYTES >> 20} MB")
    return data


def _local_image(url, base: Optional[Path], label: str, source: str) -> Optional[bytes]:
    """A local image's bytes. Only a file inside the folder ``base`` (or a folder below it) once
    symlinks are resolved, never one under /proc, /sys or /dev, and only a regular file of at most
    MAX_IMAGE_BYTES (:func:`_read_image_file`); absolute paths and file:// URLs obey the same rule."""
    if base is None:
        return _skip(source, label, "it is a local file, and the HTML was given without its folder")
    if url.netloc not in ("", "localhost"):
        return _skip(source, label, "it is a file on another host")
    root = Path(base).resolve()
    try:
        target = (root / unquote(url.path)).resolve()         # an absolute path replaces root
    except (OSError, RuntimeError, ValueError):
        return _skip(source, label, "its path cannot be resolved")
    if not target.is_relative_to(root):
        return _skip(source, label, "it is outside the document's folder (images are read from that folder "
                                    "and below only)")
    if target.parts[:2] in _SYSTEM_DIRS:
        return _skip(source, label, "it is under /proc, /sys or /dev")
    return _read_image_file(target, label, source)


def _read_image_file(path: Path, label: str, source: str) -> Optional[bytes]:
    """The bytes of a regular file of at most MAX_IMAGE_BYTES. Checked before it is opened (so a
    device or FIFO is never opened), opened without following a symlink and without blocking, and
    checked again on the opened file (which may have been swapped in between)."""
    try:
        problem = _file_problem(os.stat(path))
        if problem is None:
            with os.fdopen(os.open(path, _OPEN_FLAGS), "rb") as f:
                problem = _file_problem(os.fstat(f.fileno()))
                data = f.read(MAX_IMAGE_BYTES + 1) if problem is None else b""
    except OSError as exc:
        return _skip(source, label, f"the file cannot be read ({exc.strerror or type(exc).__name__})")
    if problem is None and len(data) > MAX_IMAGE_BYTES:                       # it grew after the check
        problem = f"it is larger than {MAX_IMAGE_BYTES >> 20} MB"
    return data if problem is None else _skip(source, label, problem)


def _file_problem(st: os.stat_result) -> Optional[str]:
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_size > MAX_IMAGE_BYTES:
        return f"it is larger than {MAX_IMAGE_BYTES >> 20} MB"
    return None


def load_html(path, *, images: bool = True, data: Optional[bytes] = None):
    """Read an HTML file: its visible text with block structure (one page)."""

    path = Path(path)
    data = _read_bytes(path) if data is None else data
    try:
        text, figures = html_text(data, base=path.parent, source=str(path), images=images)
    except RecursionError as exc:
        raise DocumentReadError(f"{path} nests its elements too deeply to read; "
                                "save it with simpler markup (or as text) and try again") from exc
    return Document(text=text, page_starts=[0], source=str(path), images=figures)


# ---------------------------------------------------------------------------------------- files

def _read_bytes(path: Path) -> bytes:
    """A document file's bytes: only a regular file, within ``longread.files.MAX_DOCUMENT_BYTES``."""
    from .files import read_regular_file

    return read_regular_file(path)


READERS = {".pdf": load_pdf, ".html": load_html, ".htm": load_html}
