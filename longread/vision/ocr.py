"""Text inside images (scanned pages, chart labels, figure text) via RapidOCR.

``rapidocr-onnxruntime`` installs with pip and carries its own detection, orientation and
recognition models (ONNX), so OCR runs offline. It is an optional dependency: without it,
:func:`read_text` raises :class:`~longread.errors.OCRUnavailableError` saying how to install it.

The engine scales an image's short side up to 30 pixels and its text detector then scales the
short side up to 736: left alone, a 1600 x 1 hairline becomes a 48000 x 12000 array (over 6 GB),
and a 2048 x 8 rule or a 1 x 5000 strip makes it fail. So each image is shaped before the engine
sees it: an image thinner than ``MIN_TEXT_SIDE`` is skipped (no readable text fits in it), a
longest side over ``OCR_MAX_SIDE`` is scaled down, and the short side is padded with the image's
border colour up to an aspect ratio of ``MAX_ASPECT_RATIO``; the engine then works on at most
about 4 M pixels (2000 x 2000, or 736 x 2944 at the widest: under 1 GB at its peak). An image
the engine still fails on is skipped too. A skipped image gets an
:class:`~longread.errors.ImageSkippedWarning` naming it and is read as an image without text.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ..errors import ImageSkippedWarning, OCRUnavailableError

# pixels: an image whose short side is thinner holds no text the engine reads (it reads text
# from about 12 pixels high); it is skipped instead of being scaled up
MIN_TEXT_SIDE = 10
# longest side / shortest side given to the engine (the ratio its own letterbox pads wide images
# to); a longer image is padded, which keeps the detector's input (short side scaled to 736) bounded
MAX_ASPECT_RATIO = 4
# pixels: the longest side given to the engine (its own max_side_len); larger images are scaled down
OCR_MAX_SIDE = 2000

_ENGINE = None
_CACHE: "OrderedDict[str, List[OCRLine]]" = OrderedDict()
_CACHE_SIZE = 256


@dataclass(frozen=True)
class OCRLine:
    text: str
    box: Tuple[float, float, float, float]    # (x0, y0, x1, y1) pixels of the image that was read
    score: float                              # recognition confidence in [0, 1]


def _engine():
    global _ENGINE
    if _ENGINE is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise OCRUnavailableError("reading text inside images needs the OCR engine rapidocr-onnxruntime: "
                                      "pip install 'longread[images]' (or pass ocr=False to read images "
                                      "without their text)") from exc
        _ENGINE = RapidOCR()
    return _ENGINE


def read_text(image, min_score: float = 0.5, name: str = "image") -> List[OCRLine]:
    """Text lines of an RGB PIL image, in the engine's reading order (top to bottom, left to right).
    Lines recognised with confidence below ``min_score`` are dropped. Cached by pixel content.
    An image the engine cannot take (see the module docstring) is skipped with a warning naming
    it (``name``) and has no lines."""
    engine = _engine()
    image = image.convert("RGB")
    w, h = image.size
    scale = min(1.0, OCR_MAX_SIDE / max(w, h, 1))
    if min(w, h) * scale < MIN_TEXT_SIDE:
        return _skipped(name, f"it is {w} x {h} pixels, too thin to hold readable text "
                              f"(under {MIN_TEXT_SIDE} pixels across)")
    pixels = np.asarray(image)                                                 # (H, W, 3) uint8
    key = hashlib.sha1(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest() + f"/{min_score}"
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    bgr, back = _engine_input(image, scale)
    try:
        result, _ = engine(bgr)
    except Exception as exc:             # a shape or content the engine fails on: this image only
        return _skipped(name, f"the OCR engine failed on it ({type(exc).__name__}: {str(exc)[:200]})")
    lines = _lines(result, min_score, back, (w, h))
    _CACHE[key] = lines
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return lines


def _skipped(name: str, reason: str) -> list:
    warnings.warn(f"image {name!r}: {reason}; OCR skipped, the image is read without text",
                  ImageSkippedWarning, stacklevel=3)
    return []


def _engine_input(image, scale: float):
    """(BGR uint8 pixels for the engine, (x, y) factors from them back to ``image``'s pixels):
    ``image`` scaled by ``scale``, then padded at the bottom or right with the median colour of
    its border until neither side is more than MAX_ASPECT_RATIO times the other."""
    from PIL import Image

    size = image.size
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    a = np.asarray(image)
    h, w = a.shape[:2]
    height, width = max(h, -(-w // MAX_ASPECT_RATIO)), max(w, -(-h // MAX_ASPECT_RATIO))
    if (height, width) != (h, w):
        canvas = np.empty((height, width, 3), np.uint8)
        canvas[:] = np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), axis=0)
        canvas[:h, :w] = a
        a = canvas
    return np.ascontiguousarray(a[:, :, ::-1]), (size[0] / w, size[1] / h)


def _lines(result, min_score: float, back, size) -> List[OCRLine]:
    """OCRLines of the engine's ``result``, boxes mapped back by ``back`` and clipped to ``size``."""
    lines = []
    for quad, text, score in result or []:
        text = " ".join(str(text).split())
        if not text or float(score) < min_score:
            continue
        q = np.asarray(quad, dtype=np.float64) * back                          # (4, 2) corner points
        x = np.clip(q[:, 0], 0, size[0])
        y = np.clip(q[:, 1], 0, size[1])
        lines.append(OCRLine(text, (float(x.min()), float(y.min()), float(x.max()), float(y.max())), float(score)))
    return lines
