"""The campaign's portable state: what a fresh machine resumes from."""
import json
from pathlib import Path

import pytest
import torch

from longread.training import campaign_state

SHIPPED = Path(__file__).resolve().parents[1] / "longread" / "default_model"


def _tensors(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {"layers.0.attn.weight": torch.randn(48, 32, generator=g) * scale,
            "qa_head.bias": torch.randn(3, generator=g) * scale}


def test_round_trip_restores_the_trained_weights_to_fp16_precision_of_the_change(tmp_path):
    start = _tensors(0)
    noise = _tensors(1, scale=1e-3)
    current = {k: v + noise[k] for k, v in start.items()}
    state = {"epoch": 1, "batch": 17, "step": 4458, "total": 8882, "best_f1": 55.0}
    campaign_state.save(tmp_path, state, current, start, best=None)
    got_state, got, best = campaign_state.load(tmp_path, start)
    assert got_state == state and best is None
    for k in start:
        change = current[k] - start[k]
        err = (got[k] - current[k]).abs().max().item()
        # the stored difference is fp16: relative error about 2**-11 of the change, not of the weight
        assert err <= change.abs().max().item() * 2 ** -10
        assert err < 1e-5                    # a step at lr 8e-5 moves a weight by about 1e-4
    # the file is small: two bytes per trained number
    assert (tmp_path / campaign_state.WEIGHTS_NAME).stat().st_size < 2 * sum(v.numel() for v in start.values()) + 4096


def test_best_weights_are_kept_apart_only_when_they_differ_from_the_current_ones(tmp_path):
    start = _tensors(0)
    best_w = {k: v + 0.01 for k, v in start.items()}
    current = {k: v - 0.02 for k, v in start.items()}
    ev = {"mean_f1": 50.0}
    state = {"step": 30}
    campaign_state.save(tmp_path, state, current, start, {"state": best_w, "step": 20, "eval": ev})
    assert (tmp_path / campaign_state.BEST_NAME).exists()
    _, got, best = campaign_state.load(tmp_path, start)
    assert best["step"] == 20 and best["eval"] == ev
    assert torch.allclose(best["state"]["qa_head.bias"], best_w["qa_head.bias"], atol=1e-5)
    assert torch.allclose(got["qa_head.bias"], current["qa_head.bias"], atol=1e-5)
    # a later evaluation makes the current weights the best: the separate file goes
    campaign_state.save(tmp_path, {"step": 40}, current, start, {"state": current, "step": 40, "eval": ev})
    assert not (tmp_path / campaign_state.BEST_NAME).exists()
    meta = json.loads((tmp_path / campaign_state.STATE_NAME).read_text())
    assert meta["best"]["current"] is True
    _, got, best = campaign_state.load(tmp_path, start)
    assert best["state"] is got


def test_a_state_for_another_model_is_refused_with_a_clear_error(tmp_path):
    start = _tensors(0)
    campaign_state.save(tmp_path, {"step": 1}, start, start)
    other = dict(start, **{"layers.1.attn.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="does not match the model"):
        campaign_state.load(tmp_path, other)
    assert not campaign_state.exists(tmp_path / "nowhere") and campaign_state.exists(tmp_path)


def test_final_export_takes_the_later_weights_and_the_logged_evaluation_of_their_step(tmp_path):
    from argparse import Namespace

    from longread.training.campaign import final_record

    start = _tensors(0)
    portable_w = {k: v + 0.01 for k, v in start.items()}
    local_w = {k: v - 0.03 for k, v in start.items()}
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"step": 30, "eval": {"mean_f1": 40.0}}, {"step": 50, "loss": 1.0},
        {"step": 50, "eval": {"mean_f1": 45.0}}, {"event": "stop", "step": 50}]) + "\n")
    args = Namespace(log=str(log), state_dir=str(tmp_path / "state"))
    portable = ({"step": 30}, portable_w, None)
    # no local checkpoint: the portable state's weights and the evaluation logged at its step
    rec = final_record(args, tmp_path / "checkpoint.pt", portable)
    assert rec["step"] == 30 and rec["eval"] == {"mean_f1": 40.0} and rec["state"] is portable_w
    # a later local checkpoint wins
    torch.save({"model": local_w, "state": {"step": 50}}, tmp_path / "checkpoint.pt")
    rec = final_record(args, tmp_path / "checkpoint.pt", portable)
    assert rec["step"] == 50 and rec["eval"] == {"mean_f1": 45.0}
    assert torch.equal(rec["state"]["qa_head.bias"], local_w["qa_head.bias"])
    # weights the log never evaluated are refused, not exported without held-out figures
    torch.save({"model": local_w, "state": {"step": 60}}, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit, match="no held-out evaluation at step 60"):
        final_record(args, tmp_path / "checkpoint.pt", portable)
    with pytest.raises(SystemExit, match="nothing to export"):
        final_record(args, tmp_path / "none.pt", None)


def test_exported_arguments_write_the_home_directory_as_a_tilde():
    import os
    from argparse import Namespace

    from longread.training.campaign import portable_args

    home = os.path.expanduser("~")
    got = portable_args(Namespace(run_dir=os.path.join(home, ".cache", "run"), log="docs/log.jsonl", lr=1e-4,
                                  other=home + "x"))
    assert got == {"run_dir": os.path.join("~", ".cache", "run"), "log": "docs/log.jsonl", "lr": 1e-4,
                   "other": home + "x"}


def test_a_frozen_question_free_stage_trains_only_the_upper_layers_and_saves_every_changed_tensor():
    from longread.training.campaign import build_model, campaign_delta, parse_args

    args = parse_args(["--question-free-layers", "2", "--freeze-question-free",
                       "--init-from", str(SHIPPED)])
    model, _ = build_model(args)
    from safetensors.torch import load_file

    shipped = load_file(str(SHIPPED / "delta.safetensors"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("layers.1.") for n in frozen) and not any(n.startswith("layers.2.") for n in frozen)
    assert all(n.startswith(("embed.", "layers.0.", "layers.1.")) for n in frozen)
    before = campaign_delta(model)
    # the frozen layers keep their --init-from values in what checkpoints and exports hold
    name = next(n for n in shipped if n.startswith("layers.0."))
    assert torch.equal(before[name], shipped[name].float())
    assert not any(n.startswith("embed.") for n in before)
    # gradients reach the question-aware layers and nothing below them
    x = torch.randn(1, 24, model.config.hidden_size)
    model.run_layers(model.run_layers(x, 0, 2, 0), 2, 6, 4).square().mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("layers.2."))
