"""Progress bars (tqdm) for steps that take more than a second.

Silent when stderr is not a terminal, when ``LONGREAD_PROGRESS=0`` is set, when the caller
passes ``enabled=False`` (``Reader.progress = False``), or inside ``progress_setting(False)``
(command line: ``--quiet``).

    for page in progress(pages, desc="reading PDF", unit="page"): ...
    with layer_progress(model.layers[:3], tokens=n, desc="encoding document"): model.encode_document(...)
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterable, Optional, Sequence

from tqdm.auto import tqdm

ENV_VAR = "LONGREAD_PROGRESS"
_override: Optional[bool] = None          # set for a block of work by ``progress_setting``


def progress_enabled(enabled: Optional[bool] = None) -> bool:
    """``enabled`` if given; else the enclosing ``progress_setting``; else on only for a
    terminal and unless LONGREAD_PROGRESS=0."""
    if enabled is not None:
        return bool(enabled)
    if _override is not None:
        return _override
    if os.environ.get(ENV_VAR, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress(iterable: Optional[Iterable] = None, *, total: Optional[float] = None, desc: str = "",
             unit: str = "it", enabled: Optional[bool] = None, delay: float = 1.0, **kwargs) -> tqdm:
    """A tqdm bar on stderr (disabled per ``progress_enabled``), shown only once the work has
    taken ``delay`` seconds; it disappears when done."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                leave=False, file=sys.stderr, dynamic_ncols=True, delay=delay, **kwargs)


@contextmanager
def progress_setting(enabled: Optional[bool]):
    """Within the block, bars that were not told otherwise follow ``enabled`` (None: automatic)."""
    global _override
    saved, _override = _override, enabled
    try:
        yield
    finally:
        _override = saved


@contextmanager
def layer_progress(layers: Sequence, tokens: int, desc: str, enabled: Optional[bool] = None):
    """Advance a bar by the tokens of each forward pass one of ``layers`` (torch modules)
    finishes (its output's second dimension): total = len(layers) * tokens, unit "tok"."""
    if not progress_enabled(enabled) or not len(layers):
        yield None
        return
    bar = progress(total=len(layers) * tokens, desc=desc, unit="tok", enabled=True, unit_scale=True)

    def advance(_module, _args, output):  # returns None: the layer's output is left as it is
        bar.update(min(int(output.shape[1]), tokens))

    hooks = [layer.register_forward_hook(advance) for layer in layers]
    try:
        yield bar
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()
