"""Documents with images -> a PreparedDocument whose text holds the images' OCR text."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Sequence

from ..document import Document
from ..progress import progress
from .images import load_images
from .ocr import read_text
from .reading import ReadingText, build_reading_text


def reading_text(document: Document, images: Optional[Sequence] = None, ocr: bool = True,
                 max_side: Optional[int] = None) -> ReadingText:
    """Load ``document.images + images``, OCR them (when ``ocr``), insert their text at the anchors.
    Images are decoded one at a time for OCR; one the engine cannot take adds no text (with a warning)."""
    loaded = load_images(document, images, **({"max_side": max_side} if max_side else {}))
    lines = {im.index: read_text(im.image, name=im.name)
             for im in progress(loaded, desc="OCR", unit="image")} if ocr else {}
    return build_reading_text(document, loaded, lines)


def _images_key(reading: ReadingText) -> str:
    h = hashlib.sha1(reading.document.text.encode("utf-8", "surrogatepass"))
    h.update(repr(reading.document.page_starts).encode())
    for im, anchor in zip(reading.images, reading.anchors):
        h.update(f"{anchor}/{im.name}/{im.size}".encode())
        h.update(im.png)
    return "images:" + h.hexdigest()


def prepare_with_images(reader, document: Document, images: Optional[Sequence] = None):
    """A PreparedDocument of the reading text with ``prepared.reading`` set. It is its own cache
    entry (keyed by the text and the images), so the text-only entry of the same text is untouched."""
    reading = reading_text(document, images, ocr=reader.config.ocr)
    key = _images_key(reading)
    cache = reader._cache
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    base = reader.prepare(reading.document)
    prepared = dataclasses.replace(base, reading=reading, states=None, states_key=None)
    cache[key] = prepared
    while len(cache) > reader._cache_size:
        cache.popitem(last=False)
    return prepared
