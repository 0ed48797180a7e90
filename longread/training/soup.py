"""Average the weights of several readers trained from the same start (a "model soup").

Readers fine-tuned from one reader, with the same architecture, usually sit in one basin of the
loss: the mean of their weights reads as well as the best of them, often better, at no cost per
question. This writes that mean as a reader directory; ``--evaluate`` then scores it and every
ingredient on the campaign's held-out questions (``campaign.held_groups`` / ``campaign.evaluate``,
never a dev file), side by side.

    python -m longread.training.soup --models longread/default_model runs/a runs/b --out runs/soup \
        [--weights 2,1,1] [--evaluate --data-dir ../shared/data --threads 2]

* The ingredients must share base, encoder configuration and trained tensor names; the reader
  settings (``reader`` section: decoding, no-answer threshold, temperature) are the first
  ingredient's, so refit them on the soup (``fit_no_answer``, ``fit_prior``).
* When every ingredient has the same question-free layers (stages trained with
  ``--freeze-question-free``), the first ingredient's passage head still fits those layers and is
  copied; otherwise the soup has none and ``fit_passage_head`` must be run before it can rank chunks.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..reader import CONFIG_NAME, DELTA_NAME

PASSAGE_HEAD_KEY = "passage_head"


def _read(model_dir: Path):
    from safetensors.torch import load_file

    config_path, delta_path = model_dir / CONFIG_NAME, model_dir / DELTA_NAME
    for path in (config_path, delta_path):
        if not path.is_file():
            raise SystemExit(f"{model_dir} is not a reader directory: {path.name} is missing")
    return json.loads(config_path.read_text()), load_file(str(delta_path))


def average(deltas: Sequence[Dict[str, torch.Tensor]], weights: Sequence[float]) -> Dict[str, torch.Tensor]:
    """The weighted mean of tensors with the same names and shapes, in float32."""
    if len(deltas) != len(weights) or not deltas:
        raise ValueError(f"{len(deltas)} deltas and {len(weights)} weights: give one weight per delta")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    names = set(deltas[0])
    for i, d in enumerate(deltas[1:], 1):
        if set(d) != names:
            diff = sorted(names ^ set(d))[:4]
            raise ValueError(f"ingredient {i} holds other tensors than ingredient 0 (e.g. {diff})")
        for k in names:
            if d[k].shape != deltas[0][k].shape:
                raise ValueError(f"{k}: shape {tuple(d[k].shape)} in ingredient {i}, {tuple(deltas[0][k].shape)} in 0")
    total = float(sum(weights))
    return {k: sum(d[k].float() * (w / total) for d, w in zip(deltas, weights)) for k in sorted(names)}


def same_question_free_layers(deltas: Sequence[Dict[str, torch.Tensor]], question_free_layers: int) -> bool:
    """Whether every delta holds the same tensors for layers below ``question_free_layers``."""
    prefixes = tuple(f"layers.{i}." for i in range(question_free_layers))
    keys = [k for k in deltas[0] if k.startswith(prefixes)]
    return all(torch.equal(d[k], deltas[0][k]) for d in deltas[1:] for k in keys)


def make_soup(models: Sequence[str], out: str, weights: Optional[Sequence[float]] = None) -> dict:
    """Write the weighted mean of ``models`` (reader directories) into ``out``; returns its config."""
    from safetensors.torch import save_file

    dirs = [Path(m) for m in models]
    if len(dirs) < 2:
        raise SystemExit("a soup needs at least two --models")
    weights = list(weights) if weights else [1.0] * len(dirs)
    read = [_read(d) for d in dirs]
    configs, deltas = [c for c, _ in read], [d for _, d in read]
    for d, c in zip(dirs[1:], configs[1:]):
        for key in ("base", "encoder", "lora_scale"):
            if c.get(key) != configs[0].get(key):
                raise SystemExit(f"{d} has another {key!r} than {dirs[0]}: only readers of one architecture mix")
    try:
        mean = average(deltas, weights)
    except ValueError as exc:
        raise SystemExit(f"cannot average {', '.join(map(str, dirs))}: {exc}") from None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in mean.items()}, str(out_dir / DELTA_NAME))
    config = {k: v for k, v in configs[0].items() if k != PASSAGE_HEAD_KEY}
    shared_lower = same_question_free_layers(deltas, int(configs[0]["encoder"].get("question_free_layers", 0)))
    head = configs[0].get(PASSAGE_HEAD_KEY)
    if shared_lower and head and (dirs[0] / head["file"]).is_file():
        shutil.copyfile(dirs[0] / head["file"], out_dir / head["file"])
        config[PASSAGE_HEAD_KEY] = head
    training = dict(configs[0].get("training", {}))
    config["training"] = {"recipe": training.get("recipe", ""),
                          "soup": {"models": [str(d) for d in dirs], "weights": weights,
                                   "passage_head_copied": PASSAGE_HEAD_KEY in config},
                          "ingredients": [c.get("training", {}) for c in configs]}
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    print(f"wrote {out_dir}: mean of {len(dirs)} readers, weights {weights}"
          + ("" if PASSAGE_HEAD_KEY in config else "; no passage head: run longread.training.fit_passage_head"))
    return config


def evaluate_models(models: List[str], data_dir: str, limit: Optional[int] = None) -> Dict[str, dict]:
    """The campaign's held-out F1 per source (its rule: null wins when it beats the best span) for each
    reader directory, on the same questions, SQuAD's answer-removed and perturbed held-out sets included."""
    from transformers import AutoTokenizer

    from ..checkpoints import base_model_dir, load_hf_model
    from ..layout import LayoutConfig
    from ..reader import apply_delta
    from .campaign import BASE, evaluate, held_groups
    from .corpora import load_corpus
    from .grouped import GroupBuilder

    base_dir = base_model_dir(BASE)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    sources = ["squad", "qed", "squad2", "covidqa", "cuad"]
    corpus = load_corpus(data_dir, sources)
    results = {}
    held = None
    for m in models:
        config, delta = _read(Path(m))
        enc = config["encoder"]
        model, _ = load_hf_model(base_dir, attention_window=tuple(enc["attention_window"]),
                                 question_free_layers=enc["question_free_layers"], chunk_signal=enc["chunk_signal"])
        apply_delta(model, delta, config.get("lora_scale", 1.0))
        if held is None:
            layout = LayoutConfig(chunk_size=256, position_offset=model.config.position_offset,
                                  max_position_embeddings=model.config.max_position_embeddings)
            held = held_groups(corpus, GroupBuilder(tokenizer, layout), sources, limit,
                               answer_removed=True, question_perturbed=True)
        results[m] = evaluate(model, held, torch.device("cpu"), contextlib.nullcontext)
        print(m, json.dumps({k: round(v["f1"], 1) if isinstance(v, dict) else round(v, 2)
                             for k, v in results[m].items()}), flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="reader directories trained from one start")
    p.add_argument("--out", required=True)
    p.add_argument("--weights", default=None, help="comma-separated, one per model (default: equal)")
    p.add_argument("--evaluate", action="store_true",
                   help="score the soup and every ingredient on the campaign's held-out questions")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--eval-questions", type=int, default=None, help="held-out questions per source")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--report", default=None, help="write the evaluation as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            p.error(f"--weights takes comma-separated numbers, got {args.weights!r}")
        if len(weights) != len(args.models):
            p.error(f"--weights has {len(weights)} numbers for {len(args.models)} --models")
    make_soup(args.models, args.out, weights)
    if args.evaluate:
        results = evaluate_models(list(args.models) + [args.out], args.data_dir, args.eval_questions)
        if args.report:
            Path(args.report).write_text(json.dumps({"models": args.models, "weights": weights, "soup": args.out,
                                                     "heldout": results}, indent=2))


if __name__ == "__main__":
    main()
