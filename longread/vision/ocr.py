"""Text inside images (scanned pages, chart labels, figure text) via RapidOCR.

``rapidocr-onnxruntime`` installs with pip and carries its own detection, orientation and
recognition models (ONNX), so OCR runs offline. It is an optional dependency: without it,
:func:`read_text` raises :class:`~longread.errors.OCRUnavailableError` saying how to install it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ..errors import OCRUnavailableError

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


def read_text(image, min_score: float = 0.5) -> List[OCRLine]:
    """Text lines of an RGB PIL image, in the engine's reading order (top to bottom, left to right).
    Lines recognised with confidence below ``min_score`` are dropped. Cached by pixel content."""
    pixels = np.asarray(image.convert("RGB"))                                  # (H, W, 3) uint8
    key = hashlib.sha1(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest() + f"/{min_score}"
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result, _ = _engine()(pixels[:, :, ::-1].copy())                           # the engine reads BGR
    lines = []
    for quad, text, score in result or []:
        text = " ".join(str(text).split())
        if not text or float(score) < min_score:
            continue
        q = np.asarray(quad, dtype=np.float64)                                 # (4, 2) corner points
        lines.append(OCRLine(text, (float(q[:, 0].min()), float(q[:, 1].min()),
                                    float(q[:, 0].max()), float(q[:, 1].max())), float(score)))
    _CACHE[key] = lines
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return lines
