"""Images in: load, validate and normalise with Pillow, and tie each image to a place in the text.

Defined behaviour for every input:

* accepted items: ``bytes``/``bytearray``, a path (``str``/``os.PathLike``), a ``PIL.Image.Image``,
  or a :class:`~longread.document.DocumentImage` (which also carries an anchor, page and name);
  anything else is a ``TypeError``.
* missing file, corrupt or truncated data, unknown format, or a mode Pillow cannot convert:
  :class:`~longread.errors.ImageReadError` naming the image.
* size: an encoded image (bytes or file) whose header declares more than ``MAX_IMAGE_PIXELS``
  pixels, or more than Pillow's decompression-bomb limit, is an
  :class:`~longread.errors.ImageTooLargeError` (an ``ImageReadError``) before anything is
  decoded: a 70-byte PNG can declare 100000 x 100000 pixels. An image with no pixels (a side of
  0) is left out with an :class:`~longread.errors.ImageSkippedWarning`.
* every image becomes 8-bit RGB: CMYK and YCbCr are converted; 16-bit and 32-bit integer or
  float greyscale (``I;16``, ``I``, ``F``) are rescaled from their own min..max range to 0..255;
  alpha (``RGBA``, ``LA``, palette with transparency) is composited on white; palette and
  1-bit images are expanded. EXIF orientation is applied.
* huge images: the longest side is resized down to ``max_side`` (default 2048, aspect kept);
  ``scale`` records the factor so boxes can be mapped back to the original pixels.
* memory: a loaded image is kept as lossless PNG bytes and decoded each time
  ``LoadedImage.image`` is read, so a document's images take about their compressed size (a
  scanned page a few hundred kB instead of 6.5 MB of RGB); identical encoded files are decoded once.
* anchors: ``anchor`` is a character offset in ``Document.text`` (``0..len(text)``), else
  ``page`` (1-based) anchors at that page's first character, else the image goes to the end of
  the document. More images than anchors is therefore fine: images without one go to the end,
  in the order given. An offset or page outside the document is an
  :class:`~longread.errors.ImageAnchorError`.
* zero images (``None`` or ``[]``): nothing is loaded; the reader behaves exactly as text-only.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..document_types import Document, DocumentImage
from ..errors import ImageAnchorError, ImageReadError, ImageSkippedWarning, ImageTooLargeError

MAX_SIDE = 2048
# Pixels (width x height, read from the file's header) above which an encoded image is refused
# undecoded. 64 M admits 48-MP photos and A4 scans at 600 dpi; decoded as RGB it is 192 MB.
MAX_IMAGE_PIXELS = 64_000_000
# zlib level of the PNG each loaded image is kept as: the fastest, and a scan still shrinks ~20x.
PNG_LEVEL = 1


@dataclass
class LoadedImage:
    """One validated image: 8-bit RGB, at most ``max_side`` pixels on its longest side, kept as
    PNG bytes (``png``) and decoded on each read of ``image``."""
    png: bytes = field(repr=False)   # the RGB image, PNG-encoded (left out of repr: it is large)
    index: int                 # position among the document's images (document.images first)
    name: str
    anchor: int                # character offset in Document.text
    page: int                  # 1-based page of the anchor
    size: tuple                # (width, height) of ``image``
    original_size: tuple       # (width, height) before any resize
    original_mode: str         # Pillow mode of the file (e.g. "CMYK", "I;16", "RGBA")
    scale: float               # resized pixels per original pixel (1.0 when not resized)

    @property
    def image(self):
        """The image as a new PIL.Image.Image, mode "RGB", decoded from ``png``."""
        img = _pil().open(io.BytesIO(self.png))
        img.load()
        return img


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:          # pragma: no cover - Pillow is a dependency of the images extra
        raise ImportError("reading images needs Pillow: pip install 'longread[images]'") from exc
    return Image


def open_image(data, name: str, decode: bool = True):
    """Open ``data`` (bytes, path or PIL image), refuse it from its header when it has more than
    ``MAX_IMAGE_PIXELS`` pixels, then decode it fully (``decode``: truncated data fails here, not
    later). A PIL image is returned as it is. Typed errors name the image."""
    Image = _pil()
    if isinstance(data, Image.Image):
        return data
    img = _open_header(_stream(data, name), name)
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageTooLargeError(f"image {name!r} is {w} x {h} pixels, more than the safe limit of "
                                 f"{MAX_IMAGE_PIXELS:,}; downscale it before passing it")
    if decode:
        try:
            img.load()
        except Exception as exc:         # any decoder failure on these bytes: the image cannot be read
            raise _unreadable(name, exc) from exc
    return img


def _stream(data, name: str):
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise ImageReadError(f"image {name!r}: file not found: {path}")
        return path
    raise TypeError(f"image {name!r} must be bytes, a path, a PIL image or a DocumentImage; "
                    f"got {type(data).__name__}")


def _open_header(stream, name: str):
    """``Image.open``: reads the header only; Pillow's decompression-bomb error becomes an
    ImageTooLargeError."""
    Image = _pil()
    try:
        return Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image {name!r} has more pixels than the safe limit ({exc}); "
                                 "downscale it before passing it") from exc
    except Exception as exc:             # any decoder failure on these bytes: the image cannot be read
        raise _unreadable(name, exc) from exc


def _unreadable(name: str, exc: Exception) -> ImageReadError:
    return ImageReadError(f"image {name!r} cannot be read (corrupt, truncated or not an image: {exc}); "
                          "pass a complete PNG/JPEG/TIFF/WebP/BMP/GIF file")


def decode_rgb(data, name: str):
    """(8-bit RGB PIL image, original size, original mode) of ``data``: :func:`open_image`, then
    :func:`to_rgb`; a mode Pillow cannot convert is an ImageReadError too."""
    img = open_image(data, name)
    try:
        return to_rgb(img), img.size, img.mode
    except Exception as exc:
        raise _unreadable(name, exc) from exc


def to_rgb(img):
    """Any Pillow mode -> 8-bit RGB (see the module docstring for each mode)."""
    Image = _pil()
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def fit(img, max_side: int = MAX_SIDE):
    """Resize so the longest side is at most ``max_side`` (aspect kept). Returns (image, scale)."""
    Image = _pil()
    w, h = img.size
    if max(w, h) <= max_side:
        return img, 1.0
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.LANCZOS), scale


def resolve_anchor(item: DocumentImage, document: Document, name: str) -> int:
    """Character offset of the image in ``document.text`` (see the module docstring)."""
    n = len(document.text)
    if item.anchor is not None:
        if isinstance(item.anchor, bool) or not isinstance(item.anchor, (int, np.integer)):
            raise TypeError(f"image {name!r}: anchor must be an int character offset, got {item.anchor!r}")
        if not 0 <= item.anchor <= n:
            raise ImageAnchorError(f"image {name!r} is anchored at character {item.anchor}, outside the "
                                   f"document (0..{n}); anchor it inside the text, or leave anchor=None "
                                   "to place it at the end")
        return int(item.anchor)
    if item.page is not None:
        pages = len(document.page_starts)
        if isinstance(item.page, bool) or not isinstance(item.page, (int, np.integer)) or not 1 <= item.page <= pages:
            raise ImageAnchorError(f"image {name!r} is on page {item.page!r}, but the document has pages "
                                   f"1..{pages}; give a page that exists, or leave page=None")
        return int(document.page_starts[item.page - 1])
    return n


def as_document_image(item) -> DocumentImage:
    if isinstance(item, DocumentImage):
        return item
    name = str(item) if isinstance(item, (str, os.PathLike)) else ""
    return DocumentImage(data=item, name=name)


def load_images(document: Document, images: Optional[Sequence] = None,
                max_side: int = MAX_SIDE) -> List[LoadedImage]:
    """``document.images`` followed by ``images``, each loaded, converted to RGB, resized, kept as
    PNG and anchored. Returned in the order given (their ``index``); anchors may repeat. An image
    with no pixels is left out with a warning (its ``index`` is then missing)."""
    if images is not None and not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of images (bytes, paths, PIL images or DocumentImage), "
                        f"got {type(images).__name__}")
    items = list(document.images or []) + list(images or [])
    out, seen = [], {}
    for i, raw in enumerate(items):
        item = as_document_image(raw)
        name = item.name or f"image {i}"
        anchor = resolve_anchor(item, document, name)
        pixels = _normalise(item.data, name, max_side, seen)
        if pixels is not None:
            page = document.page_of(anchor) if item.page is None else int(item.page)
            out.append(LoadedImage(index=i, name=name, anchor=anchor, page=page, **pixels))
    return out


def _normalise(data, name: str, max_side: int, seen: dict):
    """The pixel fields of one image's LoadedImage (``png``, ``size``, ``original_size``,
    ``original_mode``, ``scale``), or None when it has no pixels. Encoded files already in
    ``seen`` (by content) are not decoded again."""
    key = hashlib.sha1(data).digest() if isinstance(data, (bytes, bytearray, memoryview)) else None
    if key is not None and key in seen:
        return seen[key]
    img = open_image(data, name)
    if 0 in img.size:
        warnings.warn(f"image {name!r} has no pixels ({img.width} x {img.height}): left out",
                      ImageSkippedWarning, stacklevel=3)
        return None
    rgb, original_size, original_mode = decode_rgb(img, name)
    rgb, scale = fit(rgb, max_side)
    png = io.BytesIO()
    rgb.save(png, format="PNG", compress_level=PNG_LEVEL)
    result = dict(png=png.getvalue(), size=rgb.size, original_size=original_size, original_mode=original_mode,
                  scale=scale)
    if key is not None:
        seen[key] = result
    return result
