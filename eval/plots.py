"""PNG plots of a long-context run (matplotlib, Agg backend: no display needed).

* ``<name>_accuracy.png``: hit % against document length (log x), one panel per task, one line
  per system.
* ``<name>_depth.png``: niah_single hit % on a depth x length grid, one panel per system.
* ``<name>_throughput.png``: tokens/s and time to first answer against length, log-log.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

DPI = 80


def _by_system(rows: List[dict], task: str) -> Dict[str, List[dict]]:
    out = defaultdict(list)
    for r in rows:
        if r["task"] == task and r["length"] > 0 and "hit" in r:
            out[r["system"]].append(r)
    return {s: sorted(rs, key=lambda r: r["length"]) for s, rs in out.items()}


def tokens_label(n: int) -> str:
    """1024 -> '1k', 1048576 -> '1M', 1000 -> '1000'."""
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _length_axis(ax, lengths) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(lengths)), [tokens_label(n) for n in sorted(set(lengths))])
    ax.minorticks_off()
    ax.set_xlabel("document tokens", fontsize=8)
    ax.grid(True, alpha=0.3)


def accuracy_vs_length(rows: List[dict], path: Path) -> bool:
    tasks = [t for t in dict.fromkeys(r["task"] for r in rows) if _by_system(rows, t)]
    if not tasks:
        return False
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for system, rs in _by_system(rows, task).items():
            ax.plot([r["length"] for r in rs], [r["hit"] for r in rs], marker="o", label=system)
        ax.set_title(task, fontsize=9)
        ax.set_ylim(-5, 105)
        _length_axis(ax, [r["length"] for r in rows if r["length"] > 0])
    axes[0][0].set_ylabel("hit %")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def depth_heatmap(records: List[dict], path: Path) -> bool:
    cells = defaultdict(list)                                    # (system, depth, length) -> hits
    for r in records:
        if r["task"] == "niah_single" and "hit" in r:
            cells[(r["system"], r["depth"], r["length"])].append(r["hit"])
    if not cells:
        return False
    systems = list(dict.fromkeys(k[0] for k in cells))
    depths = sorted({k[1] for k in cells})
    lengths = sorted({k[2] for k in cells})
    fig, axes = plt.subplots(1, len(systems), figsize=(2.0 * len(systems) + 1.0, 2.8), squeeze=False,
                             layout="constrained")
    for ax, system in zip(axes[0], systems):
        grid = np.full((len(depths), len(lengths)), np.nan)
        for i, d in enumerate(depths):
            for j, n in enumerate(lengths):
                if (system, d, n) in cells:
                    grid[i, j] = 100 * np.mean(cells[(system, d, n)])
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [tokens_label(n) for n in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths] if ax is axes[0][0] else [], fontsize=7)
        ax.set_title(system, fontsize=9)
        ax.set_xlabel("tokens", fontsize=8)
    axes[0][0].set_ylabel("needle depth", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label="hit %", shrink=0.8)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def throughput_vs_length(rows: List[dict], path: Path) -> bool:
    per = defaultdict(dict)                                      # system -> length -> [tokens/s, seconds]
    for r in rows:
        if r["length"] > 0 and r.get("tokens_per_s"):
            per[r["system"]].setdefault(r["length"], []).append((r["tokens_per_s"], r["first_answer_s"]))
    if not per:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.0, 3.0))
    for system, by_len in per.items():
        ls = sorted(by_len)
        a1.plot(ls, [np.mean([v[0] for v in by_len[n]]) for n in ls], marker="o", label=system)
        a2.plot(ls, [np.mean([v[1] for v in by_len[n]]) for n in ls], marker="o", label=system)
    for ax, label in ((a1, "tokens/s (first answer)"), (a2, "time to first answer, s")):
        _length_axis(ax, [n for by_len in per.values() for n in by_len])
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel(label, fontsize=8)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def make_all(rows: List[dict], records: List[dict], out_dir: Path, name: str) -> Dict[str, str]:
    """Write the three plots (those with data) into ``out_dir``; returns {plot: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for key, fn, data in (("accuracy", accuracy_vs_length, rows), ("depth", depth_heatmap, records),
                          ("throughput", throughput_vs_length, rows)):
        path = out_dir / f"{name}_{key}.png"
        if fn(data, path):
            made[key] = str(path)
    return made
