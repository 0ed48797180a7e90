"""The reading text: the document text with each image's OCR text inserted at its anchor.

With images, the reader reads ``reading.document.text``: the original text, and at each image's
anchor a block ``"\\n\\n" + line_1 + "\\n" + ... + line_k + "\\n\\n"`` holding the image's OCR
lines (several images at one anchor: in image order; an image without text adds nothing).
Answer offsets index this reading text, so ``prepared.document.text[a.start:a.end] == a.text``
holds for answers in the text and in images alike; :meth:`ReadingText.to_original` maps an
offset outside the inserted blocks back to the caller's text. Page starts move with the text
(an image anchored at a page's first character belongs to that page).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..document import Document
from .images import LoadedImage
from .ocr import OCRLine


@dataclass
class ImageLine:
    """One OCR line placed in the reading text."""
    image: int                                  # LoadedImage.index
    name: str
    start: int                                  # [start, end) in the reading text
    end: int
    box: Tuple[float, float, float, float]      # (x0, y0, x1, y1) in the original image's pixels


@dataclass
class ReadingText:
    document: Document                          # text with the OCR blocks inserted
    original: Document
    images: List[LoadedImage]
    anchors: List[int]                          # each image's anchor in the reading text
    lines: List[ImageLine] = field(default_factory=list)
    inserts: List[Tuple[int, int]] = field(default_factory=list)   # (original offset, inserted chars)

    def to_original(self, offset: int) -> int:
        """Reading-text offset -> original-text offset (offsets inside a block map to its anchor)."""
        shift = 0
        for at, length in self.inserts:
            block_start = at + shift
            if offset < block_start:
                break
            if offset < block_start + length:
                return at
            shift += length
        return offset - shift

    def block_bounds(self) -> List[Tuple[int, int]]:
        """[start, end) of each inserted OCR block in the reading text, in text order."""
        out, shift = [], 0
        for at, length in self.inserts:
            out.append((at + shift, at + shift + length))
            shift += length
        return out

    def token_segments(self, token_starts: np.ndarray) -> np.ndarray:
        """(n,) segment of each token (by its first character): the document text before the first
        block is 0, the first block 1, the text after it 2, ... An answer span never has its two
        ends in different segments, so it never mixes document text with text read from an image."""
        edges = np.asarray([b for bounds in self.block_bounds() for b in bounds], dtype=np.int64)
        return np.searchsorted(edges, np.asarray(token_starts, dtype=np.int64), side="right")

    def locate(self, start: int, end: int) -> Optional[Tuple[int, str, Tuple[float, float, float, float]]]:
        """(image index, image name, box) when ``[start, end)`` lies inside one image's OCR text;
        the box is the union of the boxes of the lines the span touches. None otherwise."""
        for index in dict.fromkeys(ln.image for ln in self.lines):
            own = [ln for ln in self.lines if ln.image == index]
            if own[0].start <= start and end <= own[-1].end:
                touched = [ln for ln in own if ln.start < end and start < ln.end] or own[:1]
                box = (min(ln.box[0] for ln in touched), min(ln.box[1] for ln in touched),
                       max(ln.box[2] for ln in touched), max(ln.box[3] for ln in touched))
                return index, own[0].name, box
        return None


def build_reading_text(document: Document, images: Sequence[LoadedImage],
                       ocr_lines: Dict[int, List[OCRLine]]) -> ReadingText:
    """Insert each image's OCR lines (``ocr_lines[image.index]``, boxes in the loaded image's
    pixels) at its anchor. Images with no lines are kept (for the fusion) but add no text."""
    order = sorted(images, key=lambda im: (im.anchor, im.index))
    pieces, lines, inserts, anchors = [], [], [], {}
    pos = out = 0
    text = document.text
    for im in order:
        pieces.append(text[pos:im.anchor])
        out += im.anchor - pos
        pos = im.anchor
        anchors[im.index] = out
        found = ocr_lines.get(im.index) or []
        if not found:
            continue
        block, cursor = ["\n\n"], out + 2
        for k, ln in enumerate(found):
            if k:
                block.append("\n")
                cursor += 1
            box = tuple(c / im.scale for c in ln.box)
            lines.append(ImageLine(im.index, im.name, cursor, cursor + len(ln.text), box))
            block.append(ln.text)
            cursor += len(ln.text)
        block.append("\n\n")
        inserted = "".join(block)
        pieces.append(inserted)
        inserts.append((im.anchor, len(inserted)))
        out += len(inserted)
    pieces.append(text[pos:])
    new_text = "".join(pieces)

    def moved(p: int) -> int:
        return p + sum(length for at, length in inserts if at < p)

    page_starts = [moved(p) for p in document.page_starts]
    reading = replace(document, text=new_text, page_starts=page_starts, images=[])
    return ReadingText(reading, document, list(images), [anchors[im.index] for im in images], lines, inserts)
