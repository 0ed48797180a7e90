"""One-call API: ``longread.answer(doc, images=None, question=...)``."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from .document import DocumentInput
from .reader import Answer, Reader

_READERS: Dict[tuple, Reader] = {}


def default_reader(device=None, dtype=None) -> Reader:
    """The offline default Reader, loaded once per (device, dtype) and reused."""
    key = (str(device), str(dtype))
    if key not in _READERS:
        _READERS[key] = Reader.from_pretrained(None, device=device, dtype=dtype)
    return _READERS[key]


def answer(doc: DocumentInput, images: Optional[Sequence] = None, question: str = None, *,
           model: Optional[str] = None, device=None, dtype=None, top_k: Optional[int] = None,
           max_answer_tokens: Optional[int] = None) -> Answer:
    """Answer ``question`` from ``doc`` (a string, a list of page strings, or a .txt/.md path).

    Returns an :class:`Answer` whose ``text == document_text[start:end]``, with its score,
    chunk, page, context and alternatives. ``model`` names a checkpoint (default: the offline
    reader shipped with longread). Further questions on the same document reuse its cached
    encoding. ``images``: bytes, paths, PIL images or ``DocumentImage`` (with an anchor); their
    text (OCR) is read at their anchors, and an answer found there has ``source="image"``,
    ``image``, ``image_name`` and ``box`` (see ``longread/vision/``).
    """
    if question is None:
        raise TypeError("answer() needs a question: answer(doc, question='...')")
    if model is None:
        reader = default_reader(device, dtype)
    else:
        reader = Reader.from_pretrained(model, device=device, dtype=dtype)
    return reader.answer(doc, question=question, images=images, top_k=top_k,
                         max_answer_tokens=max_answer_tokens)
