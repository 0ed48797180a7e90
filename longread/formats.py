"""Document formats: PDF (pypdf, pages rendered by pypdfium2), HTML (BeautifulSoup), plain text.

Every reader returns a :class:`~longread.document.Document` whose ``text`` is the extracted
text: answer offsets index that text, and ``page_starts`` carries the page numbers. Markdown and
plain text are read verbatim (see ``document.py``), so their offsets index the file itself.

Images go to ``Document.images`` as encoded bytes (PNG or the PDF's own JPEG) anchored at the
start of their page (PDF) or at their place in the text (HTML), for the image path to read.
"""
from __future__ import annotations

import base64
import io
import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlparse

from .errors import DocumentReadError, EncryptedDocumentError
from .progress import progress

PDF_MAGIC = b"%PDF-"
RENDER_MODES = ("auto", "all", "none")


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


def _render_pages(data: bytes, numbers: List[int], password: Optional[str], dpi: int) -> dict:
    """{page index: PNG bytes} for the given 0-based pages, via PDFium."""
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
            png = io.BytesIO()
            pdf[i].render(scale=dpi / 72).to_pil().save(png, format="PNG")
            out[i] = png.getvalue()
    except pypdfium2.PdfiumError as exc:
        warnings.warn(f"PDF page {i + 1} and later not rendered ({exc})", stacklevel=3)
    finally:
        pdf.close()
    return out


def load_pdf(path, *, password: Optional[str] = None, images: bool = True,
             render_pages: str = "auto", dpi: int = 150, data: Optional[bytes] = None):
    """Read a PDF: text per page (pages joined by a blank line; ``Document.page_of`` gives the
    1-based page of any offset).

    ``images``: put embedded figures in ``Document.images``; ``render_pages``: ``"auto"``
    renders only pages without a text layer (scans) to PNG for OCR, ``"all"`` every page,
    ``"none"`` none. ``password`` opens encrypted files. ``data`` gives the bytes directly.
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

    from .document import Document, DocumentImage, join_pages

    reader = _open_pdf(data, name, password)
    texts, figures = [], []
    try:
        for number, page in enumerate(progress(reader.pages, desc="reading PDF", unit="page"), 1):
            texts.append(page.extract_text() or "")
            if images:
                figures.append(_page_figures(page, number, name))
    except DependencyError as exc:
        raise _needs_cryptography(name, exc) from exc
    except Exception as exc:                                  # damage found while reading a page
        raise DocumentReadError(f"{name}: page {len(texts) + 1} cannot be read ({type(exc).__name__}: {exc}); "
                                "re-export or repair the PDF and try again") from exc
    text, starts = join_pages(texts)
    doc_images = []
    wanted = [i for i, t in enumerate(texts) if render_pages == "all" or (render_pages == "auto" and not t.strip())]
    rendered = _render_pages(data, wanted, password, dpi) if images and wanted else {}
    for i in range(len(texts)):
        if i in rendered:
            doc_images.append(DocumentImage(rendered[i], anchor=starts[i], page=i + 1, name=f"page {i + 1}"))
        for fig_name, fig_data in (figures[i] if images else []):
            doc_images.append(DocumentImage(fig_data, anchor=starts[i], page=i + 1, name=fig_name))
    return Document(text=text, page_starts=starts, source=name, images=doc_images)


def _page_figures(page, number: int, name: str) -> List[Tuple[str, bytes]]:
    try:
        return [(f"page {number}: {img.name}", img.data) for img in page.images]
    except Exception as exc:                                  # an image the decoder cannot handle
        warnings.warn(f"{name}: images of page {number} skipped ({type(exc).__name__}: {exc})", stacklevel=4)
        return []


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


def html_text(markup, base: Optional[Path] = None):
    """(text, images) from HTML markup (str or bytes; bytes honour the page's charset).

    Block elements (p, div, h1..h6, li, tr, ...) become paragraphs or lines; scripts, styles and
    the head (except its title) are dropped. ``<img>`` with a ``data:`` URI or a local file (relative
    to ``base``) becomes a DocumentImage anchored where it stands; remote images are skipped.
    """
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

    from .document import DocumentImage

    soup = BeautifulSoup(markup, "html.parser")
    out, images = _TextBuilder(), []

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
                data = _image_bytes(child.get("src", ""), base)
                if data is not None:
                    images.append(DocumentImage(data, anchor=out.offset(), page=1,
                                                name=child.get("alt") or child.get("src", "")[:80]))
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
    return "".join(out.parts), images


def _image_bytes(src: str, base: Optional[Path]) -> Optional[bytes]:
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        try:
            return base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            return None
    url = urlparse(src)
    if url.scheme not in ("", "file") or base is None:
        return None                                           # remote: never fetched
    path = Path(unquote(url.path))
    path = path if path.is_absolute() else base / path
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def load_html(path, *, images: bool = True, data: Optional[bytes] = None):
    """Read an HTML file: its visible text with block structure (one page)."""
    from .document import Document

    path = Path(path)
    data = _read_bytes(path) if data is None else data
    try:
        text, figures = html_text(data, base=path.parent)
    except RecursionError as exc:
        raise DocumentReadError(f"{path} nests its elements too deeply to read; "
                                "save it with simpler markup (or as text) and try again") from exc
    return Document(text=text, page_starts=[0], source=str(path), images=figures if images else [])


# ---------------------------------------------------------------------------------------- files

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DocumentReadError(f"document file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise DocumentReadError(f"{path} is a directory; pass a file") from exc
    except OSError as exc:
        raise DocumentReadError(f"cannot read {path}: {exc.strerror or exc}; "
                                "check that the file exists and you may read it") from exc


READERS = {".pdf": load_pdf, ".html": load_html, ".htm": load_html}
