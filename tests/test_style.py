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


def test_no_import_cycles():
    """No two modules of the package import each other, directly or through others (imports
    inside functions included: a lazy import hides a cycle, it does not break it)."""
    import ast

    root = Path(__file__).resolve().parent.parent / "longread"
    mods = {}
    for f in root.rglob("*.py"):
        name = ".".join(("longread",) + f.relative_to(root).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
                for cand in [f"{target}.{a.name}" for a in node.names] + [target]:
                    if cand in mods and cand != m:
                        graph[m].add(cand)
                        break
    # a module is on a cycle when it can reach itself; packages' __init__ re-exports are not cycles
    cycles = []
    for start in graph:
        if start == "longread" or mods[start].name == "__init__.py":
            continue
        seen, todo = set(), [w for w in graph[start] if mods[w].name != "__init__.py"]
        while todo:
            v = todo.pop()
            if v == start:
                cycles.append(start)
                break
            if v not in seen:
                seen.add(v)
                todo += [w for w in graph[v] if mods[w].name != "__init__.py"]
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"
