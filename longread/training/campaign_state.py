"""A campaign's resumable state in a form small enough to keep with the project.

``checkpoint.pt`` in the run directory holds everything (fp32 weights, AdamW moments, about 130 MB)
but lives on one machine. This state travels with the repository instead, so a run continues on a
fresh machine from where the last one stopped:

    <dir>/state.json          epoch, batch, step, schedule, best held-out F1, tokens, the run's arguments
    <dir>/weights.safetensors the trained tensors as fp16 differences from their starting values
    <dir>/best.safetensors    the same for the best evaluated weights, when they are not the current ones

Differences (trained minus the base weights; the freshly initialised head counts from zero) are
small, so fp16 keeps them to about 1e-3 of their size: far below one training step's change. The
optimizer's moments are not kept: a run resumed from here rebuilds them over a short warm-up
(``rewarm_steps`` in the state), which the log records.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

import torch

STATE_NAME, WEIGHTS_NAME, BEST_NAME = "state.json", "weights.safetensors", "best.safetensors"


def _differences(current: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: (v.float() - start[k].float()).half().contiguous() for k, v in current.items()}


def _write_atomic(tensors: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def save(directory, state: dict, current: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor],
         best: Optional[dict] = None) -> None:
    """Write the state; ``best`` is the run's best record ({"state": tensors, "step", "eval"}) or None."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(_differences(current, start), out / WEIGHTS_NAME)
    meta = {"state": state, "best": None}
    if best is not None:
        meta["best"] = {"step": best["step"], "eval": best["eval"], "current": best["step"] == state["step"]}
        if best["step"] != state["step"]:
            _write_atomic(_differences(best["state"], start), out / BEST_NAME)
    if (meta["best"] is None or meta["best"]["current"]) and (out / BEST_NAME).exists():
        (out / BEST_NAME).unlink()
    tmp = out / (STATE_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / STATE_NAME)


def exists(directory) -> bool:
    return directory is not None and (Path(directory) / STATE_NAME).is_file()


def load(directory, start: Dict[str, torch.Tensor]):
    """Returns (state, current tensors, best record or None), tensors in fp32 on the CPU."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / STATE_NAME).read_text())

    def restore(name):
        diff = load_file(str(d / name))
        missing = set(start) - set(diff)
        if missing or set(diff) - set(start):
            raise ValueError(f"{d / name} does not match the model being trained "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(set(diff) - set(start))[:3]}); "
                             "was it written with other --question-free-layers or --sources?")
        return {k: start[k].float() + diff[k].float() for k in start}

    current = restore(WEIGHTS_NAME)
    best = None
    if meta["best"] is not None:
        tensors = current if meta["best"]["current"] else restore(BEST_NAME)
        best = {"state": tensors, "step": meta["best"]["step"], "eval": meta["best"]["eval"]}
    return meta["state"], current, best
