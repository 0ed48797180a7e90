"""Import Hugging Face BERT-family checkpoints (BERT, MiniLM, RoBERTa, Longformer; bare encoders
or ``*ForQuestionAnswering``) into ``LongReaderModel``: a config translation and a rename table.

Loading is local-first: a directory with ``config.json`` and ``model.safetensors`` (or
``pytorch_model.bin``). A hub name is passed to ``huggingface_hub`` only when it is not a
local path, so offline use never touches the network.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from .errors import CheckpointError
from .model import EncoderConfig, LongReaderModel

SUPPORTED = ("bert", "roberta", "longformer")
_PREFIXES = ("bert.", "roberta.", "longformer.")

# (Hugging Face name after the model prefix, ours); {i} is the layer index
_NAME_PAIRS = [
    ("embeddings.word_embeddings.", "embed.word."),
    ("embeddings.position_embeddings.", "embed.position."),
    ("embeddings.token_type_embeddings.", "embed.token_type."),
    ("embeddings.LayerNorm.", "embed.norm."),
    ("encoder.layer.{i}.attention.self.query.", "layers.{i}.attn.q."),
    ("encoder.layer.{i}.attention.self.key.", "layers.{i}.attn.k."),
    ("encoder.layer.{i}.attention.self.value.", "layers.{i}.attn.v."),
    ("encoder.layer.{i}.attention.self.query_global.", "layers.{i}.attn.q_global."),
    ("encoder.layer.{i}.attention.self.key_global.", "layers.{i}.attn.k_global."),
    ("encoder.layer.{i}.attention.self.value_global.", "layers.{i}.attn.v_global."),
    ("encoder.layer.{i}.attention.output.dense.", "layers.{i}.attn.out."),
    ("encoder.layer.{i}.attention.output.LayerNorm.", "layers.{i}.attn.norm."),
    ("encoder.layer.{i}.intermediate.dense.", "layers.{i}.mlp.up."),
    ("encoder.layer.{i}.output.dense.", "layers.{i}.mlp.down."),
    ("encoder.layer.{i}.output.LayerNorm.", "layers.{i}.mlp.norm."),
    ("qa_outputs.", "qa_head."),
]


def _pattern(template: str) -> str:
    return "^" + re.escape(template).replace(r"\{i\}", r"(\d+)")


def _replacement(template: str) -> str:
    return template.replace("{i}", r"\1")


# HF -> ours (any supported model, prefix removed first); ours -> HF BertForQuestionAnswering
_RENAMES = [(_pattern(hf), _replacement(ours)) for hf, ours in _NAME_PAIRS]
_TO_HF = [(_pattern(ours), ("" if hf.startswith("qa_outputs") else "bert.") + _replacement(hf))
          for hf, ours in _NAME_PAIRS if "_global" not in hf]


def to_hf_bert_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename longread weights to HF ``BertForQuestionAnswering`` names. Returns (HF state dict,
    our names with no HF counterpart, e.g. ``summaries.chunk_proj.weight``)."""
    out, left = {}, []
    for name, tensor in state.items():
        for pattern, repl in _TO_HF:
            if re.match(pattern, name):
                out[re.sub(pattern, repl, name)] = tensor
                break
        else:
            left.append(name)
    return out, left


def to_hf_longformer_state_dict(state: Dict[str, torch.Tensor], cfg: EncoderConfig, max_tokens: int
                                ) -> Tuple[Dict[str, torch.Tensor], List[str], int]:
    """Rename longread weights to HF ``LongformerForQuestionAnswering`` names, for inputs of up to
    ``max_tokens`` tokens. Without global projections of its own, the model's query/key/value are
    copied into Longformer's ``*_global`` ones. The position table is extended to ``max_tokens``
    by repeating the checkpoint's trained positions, as Longformer's own RoBERTa conversion does:
    Longformer counts positions from ``pad_token_id + 1``, and row ``pad_token_id + 1 + k`` takes
    the checkpoint's position ``position_offset + k % (max_position_embeddings - position_offset)``.
    Returns (HF state dict, our names with no counterpart, rows of the new position table)."""
    out, left = {}, []
    for name, tensor in state.items():
        for pattern, repl in _TO_HF:
            if re.match(pattern, name):
                hf_name = re.sub(pattern, repl, name)
                out["longformer." + hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name] = tensor
                break
        else:
            for ours, hf in (("q_global", "query_global"), ("k_global", "key_global"), ("v_global", "value_global")):
                m = re.match(rf"^layers\.(\d+)\.attn\.{ours}\.(weight|bias)$", name)
                if m:
                    out[f"longformer.encoder.layer.{m[1]}.attention.self.{hf}.{m[2]}"] = tensor
                    break
            else:
                left.append(name)
    if not cfg.global_projections:
        for i in range(cfg.num_hidden_layers):
            for kind in ("query", "key", "value"):
                for p in ("weight", "bias"):
                    src = out[f"longformer.encoder.layer.{i}.attention.self.{kind}.{p}"]
                    out[f"longformer.encoder.layer.{i}.attention.self.{kind}_global.{p}"] = src.clone()
    old = out["longformer.embeddings.position_embeddings.weight"]
    first, trained = cfg.pad_token_id + 1, cfg.max_position_embeddings - cfg.position_offset
    rows = first + max_tokens
    new = old.new_zeros(rows, old.shape[1])
    if cfg.position_offset >= first:
        new[:first] = old[cfg.position_offset - first:cfg.position_offset]
    k = torch.arange(max_tokens)
    new[first:] = old[cfg.position_offset + k % trained]
    out["longformer.embeddings.position_embeddings.weight"] = new
    return out, left, rows


def to_hf_longformer(model: LongReaderModel, max_tokens: int):
    """A float32 CPU ``LongformerForQuestionAnswering`` with the weights of ``model`` (see
    ``to_hf_longformer_state_dict``), attention window ``left + right`` (one-sided ``left``)."""
    from transformers import LongformerConfig, LongformerForQuestionAnswering

    cfg = model.config
    left, right = cfg.attention_window
    if left != right:
        raise CheckpointError(f"Longformer needs a symmetric window; this model's is {cfg.attention_window}")
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    hf_state, left_out, rows = to_hf_longformer_state_dict(state, cfg, max_tokens)
    unknown = [n for n in left_out if n != "summaries.chunk_proj.weight"]
    if unknown:
        raise CheckpointError(f"weights with no LongformerForQuestionAnswering counterpart: {unknown}")
    hf_cfg = LongformerConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                              num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                              intermediate_size=cfg.intermediate_size, max_position_embeddings=rows,
                              type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                              attention_window=[2 * left] * cfg.num_hidden_layers, hidden_act="gelu",
                              pad_token_id=cfg.pad_token_id, hidden_dropout_prob=cfg.hidden_dropout_prob)
    hf = LongformerForQuestionAnswering(hf_cfg)
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"Longformer conversion mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return hf.eval()


_IGNORED = re.compile(r"(^pooler\.|position_ids$|^lm_head\.|^cls\.|^classifier\.)")


def config_from_hf(hf: dict, **overrides) -> EncoderConfig:
    """Translate a Hugging Face config dict to an EncoderConfig."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise CheckpointError(f"model_type {model_type!r} is not supported; longread imports {SUPPORTED}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError("only absolute position embeddings are supported, got "
                              f"{hf.get('position_embedding_type')!r}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"hidden_act {hf.get('hidden_act')!r} is not supported (gelu only)")
    pad = hf.get("pad_token_id", 0) or 0
    kwargs = dict(
        model_type=model_type, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"], num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.1), pad_token_id=pad,
        position_offset=pad + 1 if model_type in ("roberta", "longformer") else 0,
    )
    if model_type == "longformer":
        windows = hf["attention_window"]
        windows = windows if isinstance(windows, list) else [windows] * hf["num_hidden_layers"]
        if len(set(windows)) != 1:
            raise CheckpointError(f"per-layer attention windows {windows} are not supported; "
                                  "longread uses one window for all layers")
        kwargs.update(attention_window=(windows[0] // 2, windows[0] // 2), global_projections=True)
    kwargs.update(overrides)
    return EncoderConfig(**kwargs)


def convert_state_dict(hf_state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list]:
    """Rename HF weights to ours. Returns (state dict, names that were not recognised)."""
    out, unknown = {}, []
    for name, tensor in hf_state.items():
        short = name
        for prefix in _PREFIXES:
            if short.startswith(prefix):
                short = short[len(prefix):]
                break
        if _IGNORED.search(short):
            continue
        for pattern, repl in _RENAMES:
            if re.match(pattern, short):
                out[re.sub(pattern, repl, short)] = tensor
                break
        else:
            unknown.append(name)
    return out, unknown


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path} has no model.safetensors or pytorch_model.bin")


def resolve_path(name_or_path: str) -> Path:
    """A local directory as is; otherwise a hub name downloaded with huggingface_hub."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{name_or_path} is a file; pass the checkpoint's directory")
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "merges.txt"]
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception as exc:  # network errors, unknown repos, offline mode
        raise CheckpointError(f"{name_or_path!r} is not a local directory and could not be fetched from the "
                              f"Hugging Face hub ({type(exc).__name__}: {exc}). Pass a local checkpoint "
                              "directory, or connect to the internet.") from exc


def load_hf_model(path: Path, **config_overrides) -> Tuple[LongReaderModel, dict]:
    """Build a LongReaderModel from a Hugging Face checkpoint directory. Returns (model, hf config)."""
    path = Path(path)                        # str paths too (e.g. from a CLI argument)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json; pass a Hugging Face checkpoint directory "
                              "(config.json + model.safetensors or pytorch_model.bin)")
    with open(path / "config.json") as f:
        hf_cfg = json.load(f)
    cfg = config_from_hf(hf_cfg, **config_overrides)
    model = LongReaderModel(cfg)
    state, unknown = convert_state_dict(_read_state(path))
    if unknown:
        raise CheckpointError(f"unrecognised weights in {path}: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a bare encoder has no QA head; the summaries' chunk signal is new
    allowed_missing = re.compile(r"^(qa_head\.|summaries\.)")
    really_missing = [m for m in missing if not allowed_missing.match(m)]
    if really_missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the {cfg.model_type} architecture: "
                              f"missing {really_missing[:8]}, unexpected {unexpected[:8]}")
    model.has_trained_head = not any(m.startswith("qa_head.") for m in missing)
    return model, hf_cfg
