"""Documents in: a string, a list of page strings, or a path to a .txt / .md file.

The text is never altered: every offset longread reports is an index into ``Document.text``,
so ``document.text[answer.start:answer.end] == answer.text`` holds for any input.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

from .errors import DocumentReadError, EmptyDocumentError

PAGE_SEPARATOR = "\n\n"
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
# suffixes that make a bare string count as a path rather than as document text
_PATH_SUFFIXES = TEXT_SUFFIXES + (".pdf", ".html", ".htm", ".docx")

DocumentInput = Union[str, os.PathLike, Sequence[str], "Document"]


@dataclass
class Document:
    text: str
    page_starts: List[int] = field(default_factory=lambda: [0])   # char offset where each page begins
    source: Optional[str] = None

    def page_of(self, char_offset: int) -> int:
        """1-based page number holding ``char_offset``."""
        return bisect.bisect_right(self.page_starts, char_offset)


def _looks_like_path(s: str) -> bool:
    return (len(s) < 4096 and "\n" not in s and s.strip() == s
            and s.lower().endswith(_PATH_SUFFIXES))


def _read_path(path: Path) -> Document:
    if not path.exists():
        raise DocumentReadError(f"document file not found: {path}")
    if path.is_dir():
        raise DocumentReadError(f"{path} is a directory; pass a file")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DocumentReadError(f"unsupported document format {suffix!r} ({path}); "
                                f"longread reads {', '.join(TEXT_SUFFIXES)} files, or pass the text as a string")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentReadError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from exc
    return Document(text=text, source=str(path))


def load_document(doc: DocumentInput) -> Document:
    """Turn what the user passed into a Document (without modifying the input)."""
    if isinstance(doc, Document):
        result = doc
    elif isinstance(doc, os.PathLike):
        result = _read_path(Path(doc))
    elif isinstance(doc, str):
        result = _read_path(Path(doc)) if _looks_like_path(doc) else Document(text=doc)
    elif isinstance(doc, (list, tuple)):
        if not all(isinstance(p, str) for p in doc):
            bad = next(type(p).__name__ for p in doc if not isinstance(p, str))
            raise TypeError(f"a document given as a list must hold page strings, found a {bad}")
        starts, pos = [], 0
        for page in doc:
            starts.append(pos)
            pos += len(page) + len(PAGE_SEPARATOR)
        result = Document(text=PAGE_SEPARATOR.join(doc), page_starts=starts or [0])
    else:
        raise TypeError(f"doc must be a str, a path, or a list of page strings; got {type(doc).__name__}")
    if not result.text.strip():
        where = f" ({result.source})" if result.source else ""
        raise EmptyDocumentError(f"the document{where} is empty or only whitespace; nothing to read")
    return result
