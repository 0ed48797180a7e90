"""Evidence view: one self-contained HTML page (inline CSS, no scripts, no external files) with,
per question, the answer highlighted in its passage, the alternatives in theirs, and a heat
strip of the document's chunks coloured by how much the question attended to each
(``chunk_attention.py``).

    ans, weights = answer_with_attention(reader, doc, "Who?")
    write_evidence_html(ans, reader.prepare(doc), "evidence.html", chunk_weights=weights)

Every highlight carries ``data-start``/``data-end``: its character offsets in the document text.
"""
from __future__ import annotations

from html import escape as _escape
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

LEGEND = ("Heat strip: one cell per chunk of the document, in reading order. Colour = share of the "
          "question tokens' attention in the model's last layer that lands on the chunk (its summary "
          "token and its own tokens), averaged over heads and question tokens; the darkest cell is the "
          "most attended chunk. Solid outline: the answer's chunk; dashed: chunks of alternatives.")

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #1b1b1b; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta, .legend, .where { color: #555; font-size: 13px; }
mark.answer { background: #ffd400; color: #000; padding: 1px 2px; border-radius: 2px; }
mark.alt { background: #9fd3ff; color: #000; padding: 1px 2px; border-radius: 2px; }
.passage { white-space: pre-wrap; background: #f6f6f4; border-left: 4px solid #ffd400; margin: 8px 0;
           padding: 8px 12px; font-family: ui-serif, Georgia, serif; }
.alternatives .passage { border-left-color: #9fd3ff; font-size: 14px; }
.strip { display: flex; height: 30px; border: 1px solid #bbb; margin: 10px 0 4px; background: #fff; }
.cell { flex: 1 1 0; min-width: 1px; box-sizing: border-box; }
.cell.has-answer { outline: 3px solid #000; outline-offset: -3px; }
.cell.has-alt { outline: 2px dashed #0063b1; outline-offset: -2px; }
"""


def escape(text: str) -> str:
    """HTML-escaped text that parsers give back unchanged: CR as a character reference (a raw CR
    would be read as a line feed); NUL, which HTML cannot carry, as U+FFFD."""
    return _escape(text).replace("\r", "&#13;").replace("\x00", "\ufffd")


def evidence_html(answers, prepared, chunk_weights=None, title: Optional[str] = None) -> str:
    """The evidence page as a string. ``answers``: an Answer or a list of them (one per question);
    ``prepared``: their PreparedDocument; ``chunk_weights``: None, one (C,) array (one answer), or
    a list aligned with ``answers`` (entries may be None)."""
    from .reader import Answer, PreparedDocument

    answers = [answers] if not isinstance(answers, (list, tuple)) else list(answers)
    if not answers or not all(isinstance(a, Answer) for a in answers):
        raise TypeError("answers must be an Answer or a non-empty list of them (from Reader.answer)")
    if not isinstance(prepared, PreparedDocument):
        raise TypeError(f"prepared must be the PreparedDocument the answers come from (reader.prepare(doc)), "
                        f"got {type(prepared).__name__}")
    weights = _align(chunk_weights, len(answers))
    doc = prepared.document
    ranges = chunk_char_ranges(prepared)
    source = doc.source or "text"
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{escape(title or 'longread evidence: ' + source)}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(title or 'Evidence')}</h1>",
             f"<p class=\"meta\">document: {escape(source)} · {len(doc.text):,} characters · "
             f"{len(doc.page_starts)} page(s) · {len(ranges)} chunk(s) · {prepared.num_tokens:,} tokens</p>"]
    for i, (ans, w) in enumerate(zip(answers, weights)):
        parts.append(_question_section(i, ans, w, doc, ranges))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_evidence_html(answers, prepared, path: Union[str, Path], chunk_weights=None,
                        title: Optional[str] = None) -> Path:
    """Write :func:`evidence_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(evidence_html(answers, prepared, chunk_weights, title), encoding="utf-8")
    return path


def chunk_char_ranges(prepared) -> List[tuple]:
    """[(start, end)] character range of each chunk in the document text."""
    offsets, starts = prepared.tokens.offsets, prepared.tokens.chunk_starts
    return [(int(offsets[a, 0]), int(offsets[b - 1, 1])) for a, b in zip(starts[:-1], starts[1:])]


def _align(chunk_weights, n: int) -> list:
    if chunk_weights is None:
        return [None] * n
    if isinstance(chunk_weights, (list, tuple)) and (not chunk_weights or chunk_weights[0] is None
                                                     or np.ndim(chunk_weights[0]) == 1):
        if len(chunk_weights) != n:
            raise ValueError(f"chunk_weights has {len(chunk_weights)} entries for {n} answers; give one per answer")
        return list(chunk_weights)
    if n != 1:
        raise ValueError("one chunk_weights array was given for several answers; pass a list, one per answer")
    return [chunk_weights]


def _question_section(i: int, ans, weights, doc, ranges) -> str:
    alts = list(ans.alternatives)
    out = [f"<section class=\"question\" id=\"q{i + 1}\">",
           f"<h2>Q{i + 1}: {escape(ans.question or '(no question given)')}</h2>",
           f"<p>Answer: <mark class=\"answer\">{escape(ans.text)}</mark> "
           f"<span class=\"where\">{_where(ans)}</span></p>",
           _passage(ans, doc.text, "answer")]
    if weights is not None:
        out.append(_strip(np.asarray(weights, dtype=float), ranges, doc, ans.chunk, {a.chunk for a in alts}))
        out.append(f"<p class=\"legend\">{escape(LEGEND)}</p>")
    else:
        out.append("<p class=\"legend\">No attention weights were recorded for this question.</p>")
    if alts:
        out.append("<h3>Alternatives</h3><ol class=\"alternatives\">")
        for a in alts:
            out.append(f"<li><mark class=\"alt\">{escape(a.text)}</mark> <span class=\"where\">{_where(a)}</span>"
                       f"{_passage(a, doc.text, 'alt')}</li>")
        out.append("</ol>")
    out.append("</section>")
    return "".join(out)


def _where(a) -> str:
    return escape(f"score {a.score:.3f} · page {a.page} · chunk {a.chunk} · characters {a.start}–{a.end}")


def _passage(a, text: str, kind: str) -> str:
    """The passage around ``a`` with the span marked; offsets index ``text``."""
    c0, c1 = a.context_start, a.context_start + len(a.context)
    lead = "…" if c0 > 0 else ""
    tail = "…" if c1 < len(text) else ""
    return (f"<div class=\"passage\" data-start=\"{c0}\" data-end=\"{c1}\">{lead}{escape(text[c0:a.start])}"
            f"<mark class=\"{kind}\" data-start=\"{a.start}\" data-end=\"{a.end}\">{escape(text[a.start:a.end])}</mark>"
            f"{escape(text[a.end:c1])}{tail}</div>")


def _strip(w: np.ndarray, ranges, doc, answer_chunk: int, alt_chunks: set) -> str:
    if len(w) != len(ranges):
        raise ValueError(f"chunk_weights has {len(w)} values but the document has {len(ranges)} chunks")
    top = float(w.max()) if len(w) and w.max() > 0 else 1.0
    cells = []
    for c, ((a, b), v) in enumerate(zip(ranges, w)):
        alpha = 0.05 + 0.95 * max(float(v), 0.0) / top
        cls = "cell has-answer" if c == answer_chunk else "cell has-alt" if c in alt_chunks else "cell"
        tip = f"chunk {c} · page {doc.page_of(a)} · characters {a}–{b} · attention {v:.4f}"
        cells.append(f"<span class=\"{cls}\" data-chunk=\"{c}\" data-weight=\"{v:.6g}\" title=\"{escape(tip)}\" "
                     f"style=\"background: rgba(200, 30, 30, {alpha:.3f})\"></span>")
    return f"<div class=\"strip\" role=\"img\" aria-label=\"attention per chunk\">{''.join(cells)}</div>"
