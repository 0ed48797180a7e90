"""The code passes flake8 with the project's settings (setup.cfg)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flake8_clean():
    pytest.importorskip("flake8")
    run = subprocess.run([sys.executable, "-m", "flake8", "longread", "eval", "kernels", "tests"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
