"""Reading files safely: only regular files (never a device, FIFO, socket or directory, also
behind a symlink), with a size limit stated in the error."""
from __future__ import annotations

import stat
from pathlib import Path

from .errors import DocumentReadError

MAX_DOCUMENT_BYTES = 1 << 30          # 1 GiB: a larger document file is refused before it is read


def check_regular_file(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES, what: str = "document") -> None:
    """A DocumentReadError unless ``path`` (after symlinks) is a regular file of at most
    ``max_bytes``: never read a device, FIFO, socket or directory (they never end, or block)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        hint = "; to read this string as the document's text, pass longread.Document(text=...)" \
            if what == "document" else ""
        raise DocumentReadError(f"{what} file not found: {path}{hint}") from None
    except OSError as exc:
        raise DocumentReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DocumentReadError(f"{path} is a directory; pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise DocumentReadError(f"{path} is not a regular file (a device, pipe or socket); "
                                f"longread reads {what}s only from regular files")
    if st.st_size > max_bytes:
        raise DocumentReadError(f"{path} has {st.st_size:,} bytes, more than the {max_bytes:,} bytes a {what} "
                                "may have; split it into smaller files")


def read_regular_file(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES, what: str = "document") -> bytes:
    """The bytes of ``path`` after :func:`check_regular_file`."""
    check_regular_file(path, max_bytes, what)
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)[:max_bytes]
    except OSError as exc:
        raise DocumentReadError(f"cannot read {path}: {exc.strerror or exc}; "
                                "check that the file exists and you may read it") from None
