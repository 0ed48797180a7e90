"""Keep the project's ``kernels/`` folder from shadowing the Hugging Face ``kernels`` package.

The Triton ops live in ``kernels/`` at the project root and are installed as ``longread.kernels``.
Python run from the project root (``python -m pytest``, ``python -m longread.training...``) also
finds that folder as a top-level ``kernels``; transformers (5.25 and later depend on Hugging Face's
``kernels``) then imports names from it that are not there. :func:`import_hub_kernels` imports the
real package (when it is installed) with the project root left off ``sys.path``, so the later
``import kernels`` in transformers finds it in ``sys.modules``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _is_project_root(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() == PROJECT_ROOT
    except OSError:
        return False


def import_hub_kernels() -> None:
    if "kernels" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("kernels")
    except (ImportError, ValueError):
        return
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent != PROJECT_ROOT / "kernels":
        return                                   # not shadowed: nothing to do
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not _is_project_root(p)]
    try:
        importlib.import_module("kernels")       # Hugging Face's, if installed
    except ImportError:
        sys.modules.pop("kernels", None)         # not installed: transformers will not look for it
    finally:
        sys.path[:] = saved
