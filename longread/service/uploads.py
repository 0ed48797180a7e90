"""Uploaded bytes or JSON text -> a ``Document``, never touching a server-side path.

The type comes from the file name's suffix, else from the bytes (``%PDF`` magic, an HTML tag);
an HTML page's images are only its inline ``data:`` images (no local file is read, no remote one
fetched)."""
from __future__ import annotations

import hashlib
import re
from typing import Optional, Sequence, Tuple

from ..document import Document, join_pages
from ..errors import DocumentReadError, EmptyDocumentError, UnsupportedFormatError
from ..formats import PDF_MAGIC, html_text, load_pdf

KINDS = {".pdf": "pdf", ".html": "html", ".htm": "html", ".md": "text", ".markdown": "text", ".txt": "text",
         ".text": "text", ".json": "json"}
_HTML = re.compile(rb"^\s*(<!doctype html|<html|<head|<body|<p[\s>])", re.IGNORECASE)


def document_id(kind: str, data: bytes) -> str:
    """Content address: the same bytes of the same kind are one document, for every client."""
    return hashlib.sha256(kind.encode() + b"\0" + data).hexdigest()[:32]


def detect_kind(filename: Optional[str], data: bytes) -> str:
    suffix = ("." + filename.rsplit(".", 1)[-1].lower()) if filename and "." in filename else ""
    if suffix in KINDS:
        return KINDS[suffix]
    if data.startswith(PDF_MAGIC):
        return "pdf"
    if _HTML.match(data[:512]):
        return "html"
    if not suffix:
        try:
            data.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    raise UnsupportedFormatError(f"cannot read a {suffix or 'binary'} file ({filename or 'upload'}); "
                                 "upload PDF, HTML, Markdown or plain UTF-8 text")


def parse_upload(filename: Optional[str], data: bytes, password: Optional[str] = None) -> Tuple[str, Document]:
    """(kind, Document) of an uploaded file."""
    kind = detect_kind(filename, data)
    name = filename or "upload"
    if kind == "pdf":
        return kind, load_pdf(name, data=data, password=password)
    if kind == "html":
        text, figures = html_text(data, base=None, source=name)
        return kind, _non_empty(Document(text=text, source=name, images=figures))
    if kind == "json":
        import json

        try:
            body = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DocumentReadError(f"{name} is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise DocumentReadError(f"{name}: expected an object with \"text\" or \"pages\"")
        return kind, text_document(body.get("text"), body.get("pages"), name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentReadError(f"{name} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from exc
    return kind, _non_empty(Document(text=text, source=name))


def text_document(text: Optional[str], pages: Optional[Sequence[str]], name: str = "text") -> Document:
    if (text is None) == (pages is None):
        raise DocumentReadError("give exactly one of \"text\" (a string) or \"pages\" (a list of strings)")
    if text is not None:
        if not isinstance(text, str):
            raise DocumentReadError("\"text\" must be a string")
        return _non_empty(Document(text=text, source=name))
    if not isinstance(pages, list) or not all(isinstance(p, str) for p in pages):
        raise DocumentReadError("\"pages\" must be a list of strings")
    joined, starts = join_pages(pages)
    return _non_empty(Document(text=joined, page_starts=starts, source=name))


def _non_empty(doc: Document) -> Document:
    if not doc.text.strip() and not doc.images:
        raise EmptyDocumentError(f"the document ({doc.source}) is empty or only whitespace; nothing to read")
    return doc
