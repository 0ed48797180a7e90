"""The project's ``kernels/`` folder must not shadow Hugging Face's ``kernels`` package (which
transformers 5.25+ imports) when Python runs from the project root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_top_level_kernels_is_not_the_project_folder_after_import_longread():
    where = _run("import sys, longread, importlib.util\n"
                 "m = sys.modules.get('kernels')\n"
                 "print(getattr(m, '__file__', None) if m else 'absent')")
    assert where == "absent" or not Path(where).resolve().is_relative_to(ROOT / "kernels"), where
    # the project's own ops still load under their installed name
    assert _run("import longread.kernels as k; print(k.__file__)").startswith(str(ROOT / "kernels"))


def test_a_transformers_model_loads_from_the_project_root():
    # BertModel pulls in transformers.integrations.hub_kernels (``from kernels import ...``)
    assert _run("import longread\nfrom transformers import BertConfig, BertModel\n"
                "m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,"
                " intermediate_size=64))\nprint(type(m).__name__)") == "BertModel"
