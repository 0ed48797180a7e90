"""Documents in: a string, a list of page strings, or a path (.txt/.md read verbatim; .pdf and
.html/.htm through ``formats.py``).

Which strings are paths: an ``os.PathLike`` (``pathlib.Path``) is always a file. A ``str`` is a
file when it is one line (no line break, at most 4,096 characters, no surrounding whitespace)
and either names something that exists on disk, ends in a document suffix (``.txt``, ``.md``,
``.pdf``, ``.html``, ...) or has no space and starts like a path (``/``, ``./``, ``../``, ``~/``,
``C:\\``); such a string that names nothing, a directory, a device or a file of an
unknown format is a ``DocumentReadError``, never silently read as text. Every other string is the
document's text; ``Document(text=...)`` passes any string as text, explicitly. Only regular files
are read (no devices, FIFOs or sockets, also behind symlinks), up to ``longread.files.MAX_DOCUMENT_BYTES``.

Strings, page lists and text files are never altered, and PDF/HTML text is extracted once: every
offset longread reports is an index into ``Document.text``, so
``document.text[answer.start:answer.end] == answer.text`` holds for any input.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence, Union

from .errors import DocumentReadError, EmptyDocumentError
from .files import check_regular_file, read_regular_file
from .document_types import PAGE_SEPARATOR, Document, DocumentImage, join_pages  # noqa: F401 (re-exported)
from .formats import PDF_MAGIC, READERS

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
# suffixes that make a bare string count as a path rather than as document text
_PATH_SUFFIXES = TEXT_SUFFIXES + (".pdf", ".html", ".htm", ".docx")
_PATH_START = re.compile(r"^(/|\./|\.\./|~/|[A-Za-z]:[\\/])")

DocumentInput = Union[str, os.PathLike, Sequence[str], "Document"]


def _looks_like_path(s: str) -> bool:
    """The rule of the module docstring: a one-line string that exists on disk, ends in a
    document suffix or starts like a path is a path."""
    if not s or len(s) > 4096 or "\n" in s or "\r" in s or "\x00" in s or s.strip() != s:
        return False
    if s.lower().endswith(_PATH_SUFFIXES) or (" " not in s and _PATH_START.match(s)):
        return True
    try:
        return os.path.lexists(s)
    except (OSError, ValueError):
        return False


def _read_path(path: Path) -> Document:
    check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix in READERS:
        return READERS[suffix](path)
    if suffix not in TEXT_SUFFIXES:
        if _starts_with(path, PDF_MAGIC):
            return READERS[".pdf"](path)
        readable = ", ".join(TEXT_SUFFIXES + tuple(READERS))
        raise DocumentReadError(f"unsupported document format {suffix!r} ({path}); "
                                f"longread reads {readable} files; to read a string as text, "
                                "pass longread.Document(text=...)")
    data = read_regular_file(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentReadError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from exc
    return Document(text=text, source=str(path))


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def load_document(doc: DocumentInput) -> Document:
    """Turn what the user passed into a Document (without modifying the input)."""
    if isinstance(doc, Document):
        result = doc
    elif isinstance(doc, os.PathLike):
        result = _read_path(Path(doc))
    elif isinstance(doc, str):
        result = _read_path(Path(os.path.expanduser(doc))) if _looks_like_path(doc) else Document(text=doc)
    elif isinstance(doc, (list, tuple)):
        if not all(isinstance(p, str) for p in doc):
            bad = next(type(p).__name__ for p in doc if not isinstance(p, str))
            raise TypeError(f"a document given as a list must hold page strings, found a {bad}")
        text, starts = join_pages(doc)
        result = Document(text=text, page_starts=starts)
    else:
        raise TypeError(f"doc must be a str, a path, or a list of page strings; got {type(doc).__name__}")
    if not result.text.strip() and not result.images:      # a scanned PDF still has its page images
        where = f" ({result.source})" if result.source else ""
        raise EmptyDocumentError(f"the document{where} is empty or only whitespace; nothing to read")
    return result
