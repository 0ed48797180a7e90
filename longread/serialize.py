"""One JSON object per line, safe for any reader of lines: U+2028/U+2029 (line separators to
some readers) are escaped, and a string holding a lone surrogate (not encodable as UTF-8) makes
the line ASCII-escaped instead of failing to write."""
from __future__ import annotations

import json
import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_line(obj) -> str:
    """``obj`` as one line of JSON, without the newline."""
    line = json.dumps(obj, ensure_ascii=False)
    if _SURROGATE.search(line):
        line = json.dumps(obj, ensure_ascii=True)
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
