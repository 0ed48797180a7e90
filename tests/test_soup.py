"""``longread.training.soup``: the weighted mean of readers' weights, as a loadable reader."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from longread import Reader
from longread.reader import CONFIG_NAME, DEFAULT_MODEL_DIR, DELTA_NAME
from longread.training.soup import average, make_soup, same_question_free_layers

TEXT = ("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
        "Gustave Eiffel and built from 1887 to 1889 for the World's Fair. It is 330 metres tall.")


def _copy_default(dst, change=None):
    shutil.copytree(DEFAULT_MODEL_DIR, dst)
    if change is not None:
        delta = load_file(str(dst / DELTA_NAME))
        change(delta)
        save_file(delta, str(dst / DELTA_NAME))
    return dst


def _upper(delta):
    return sorted(k for k in delta if k.startswith("layers.5."))


def test_average_is_the_weighted_mean_and_refuses_mismatches():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0])}
    m = average([a, b], [3, 1])
    assert torch.allclose(m["w"], torch.tensor([1.5, 3.0])) and torch.allclose(m["b"], torch.tensor([1.0]))
    with pytest.raises(ValueError, match="other tensors"):
        average([a, {"w": a["w"]}], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        average([a, {"w": torch.zeros(3), "b": a["b"]}], [1, 1])
    with pytest.raises(ValueError, match="weights"):
        average([a, b], [0, 0])


def test_soup_of_a_reader_with_itself_reads_exactly_as_it(tmp_path):
    a = _copy_default(tmp_path / "a")
    config = make_soup([str(a), str(a)], str(tmp_path / "soup"))
    assert "passage_head" in config and (tmp_path / "soup" / config["passage_head"]["file"]).is_file()
    ref, soup = Reader.from_pretrained(a), Reader.from_pretrained(tmp_path / "soup")
    q = "Who designed the Eiffel Tower?"
    for x, y in zip(ref.question_logits(TEXT, q), soup.question_logits(TEXT, q)):
        assert torch.equal(x, y)
    assert ref.answer(TEXT, question=q).text == soup.answer(TEXT, question=q).text


def test_soup_weights_land_in_the_loaded_reader(tmp_path):
    def shift(delta):
        for k in _upper(delta):
            delta[k] = (delta[k].float() + 0.5).half()

    a, b = _copy_default(tmp_path / "a"), _copy_default(tmp_path / "b", shift)
    make_soup([str(a), str(b)], str(tmp_path / "soup"), weights=[3, 1])
    da, db = load_file(str(a / DELTA_NAME)), load_file(str(b / DELTA_NAME))
    ds = load_file(str(tmp_path / "soup" / DELTA_NAME))
    for k in _upper(da):
        expected = (0.75 * da[k].float() + 0.25 * db[k].float()).half()
        assert torch.equal(ds[k], expected), k
    params = dict(Reader.from_pretrained(tmp_path / "soup").model.named_parameters())
    k = _upper(da)[0]
    assert torch.allclose(params[k].float(), ds[k].float())
    # lower layers untouched: the passage head is kept
    assert "passage_head" in json.loads((tmp_path / "soup" / CONFIG_NAME).read_text())


def test_soup_drops_the_passage_head_when_the_question_free_layers_differ(tmp_path):
    def shift_lower(delta):
        k = next(k for k in sorted(delta) if k.startswith("layers.0."))
        delta[k] = (delta[k].float() + 0.1).half()

    a, b = _copy_default(tmp_path / "a"), _copy_default(tmp_path / "b", shift_lower)
    assert not same_question_free_layers([load_file(str(a / DELTA_NAME)), load_file(str(b / DELTA_NAME))], 3)
    config = make_soup([str(a), str(b)], str(tmp_path / "soup"))
    assert "passage_head" not in config


def test_soup_refuses_other_architectures_and_missing_files(tmp_path):
    a = _copy_default(tmp_path / "a")
    b = _copy_default(tmp_path / "b")
    cfg = json.loads((b / CONFIG_NAME).read_text())
    cfg["encoder"]["question_free_layers"] = 1
    (b / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match="encoder"):
        make_soup([str(a), str(b)], str(tmp_path / "soup"))
    with pytest.raises(SystemExit, match="not a reader directory"):
        make_soup([str(a), str(tmp_path / "missing")], str(tmp_path / "soup"))
    with pytest.raises(SystemExit, match="at least two"):
        make_soup([str(a)], str(tmp_path / "soup"))
