"""The document types: ``Document`` (its text, page starts, source and images) and
``DocumentImage`` (an image tied to a place in the text), and how pages join into one text."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

PAGE_SEPARATOR = "\n\n"


@dataclass
class DocumentImage:
    """An image that belongs to a document, tied to a place in its text.

    ``data`` is the encoded file (bytes), a path, or a ``PIL.Image.Image``; ``anchor`` is the
    character offset in ``Document.text`` the image belongs to (``None``: the end of the
    document); ``page`` is its 1-based page when known; ``name`` identifies it in answers.
    """
    data: Any
    anchor: Optional[int] = None
    page: Optional[int] = None
    name: str = ""


@dataclass
class Document:
    text: str
    page_starts: List[int] = field(default_factory=lambda: [0])   # char offset where each page begins
    source: Optional[str] = None
    images: List[DocumentImage] = field(default_factory=list)      # figures / page images, if any

    def page_of(self, char_offset: int) -> int:
        """1-based page number holding ``char_offset``."""
        return bisect.bisect_right(self.page_starts, char_offset)


def join_pages(pages: Sequence[str]):
    """(text, page_starts): the pages joined by PAGE_SEPARATOR, and where each page starts."""
    starts, pos = [], 0
    for page in pages:
        starts.append(pos)
        pos += len(page) + len(PAGE_SEPARATOR)
    return PAGE_SEPARATOR.join(pages), starts or [0]
