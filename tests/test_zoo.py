"""Zoo: save/load round trip, denoiser from JSON, and safe refusal of bad files (never unpickles)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from diffzoo import zoo
from diffzoo.core import Denoiser
from diffzoo.models.registry import build

SCHED = {"name": "linear", "kwargs": {}}


def _save(tmp_path, name="m", **kw):
    torch.manual_seed(0)
    model = build("mlp", dim=2, hidden=16, depth=1)
    zoo.save(
        name,
        model,
        "mlp",
        {"dim": 2, "hidden": 16, "depth": 1},
        schedule=SCHED,
        prediction_type="epsilon",
        train_command="diffzoo train toy2d --steps 1",
        seed=0,
        steps=1,
        metrics={"swd": 0.1},
        weights_dir=tmp_path,
        **kw,
    )
    return model


def test_round_trip_and_denoiser(tmp_path):
    model = _save(tmp_path, dataset="ring8")
    assert zoo.names(tmp_path) == ["m"]
    zm = zoo.load("m", weights_dir=tmp_path)
    for a, b in zip(model.state_dict().values(), zm.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not zm.model.training and zm.config["dataset"] == "ring8" and zm.metrics == {"swd": 0.1}
    den = zm.denoiser()
    assert isinstance(den, Denoiser) and den.prediction_type == "epsilon"
    x, t = torch.randn(3, 2), torch.tensor([5.0, 50.0, 500.0])
    assert torch.allclose(den(x, t), model(x, t))
    # loading by explicit path works as well
    assert zoo.load(str(tmp_path / "m.safetensors")).name == "m"


def test_refuses_pickle_files_without_running_them(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    (tmp_path / "evil.json").write_text(json.dumps({"arch": "mlp", "arch_config": {}}))
    with pytest.raises(ValueError, match="pickle"):
        zoo.load(str(tmp_path / "evil.pt"))
    with pytest.raises(ValueError, match="evil.pt"):
        zoo.load("evil", weights_dir=tmp_path)
    assert not marker.exists()


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    _save(tmp_path)
    st = tmp_path / "m.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="m.safetensors"):
        zoo.load("m", weights_dir=tmp_path)
    st.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="m.safetensors"):
        zoo.load("m", weights_dir=tmp_path)


def test_bad_json_missing_key_and_wrong_arch(tmp_path):
    _save(tmp_path)
    js = tmp_path / "m.json"
    cfg = json.loads(js.read_text())
    js.write_text(json.dumps({k: v for k, v in cfg.items() if k != "arch"}))
    with pytest.raises(ValueError, match=r"m\.json.*arch"):
        zoo.load("m", weights_dir=tmp_path)
    js.write_text(json.dumps({**cfg, "arch_config": {"dim": 2, "hidden": 32, "depth": 1}}))
    with pytest.raises(ValueError, match="m.safetensors"):
        zoo.load("m", weights_dir=tmp_path)
    js.write_text(json.dumps({**cfg, "arch": "digit_classifier", "arch_config": {}}))
    with pytest.raises(ValueError, match="m.safetensors"):
        zoo.load("m", weights_dir=tmp_path)
    js.write_text("{ not json")
    with pytest.raises(ValueError, match="m.json"):
        zoo.load("m", weights_dir=tmp_path)


def test_unknown_name_lists_choices(tmp_path):
    _save(tmp_path)
    with pytest.raises(ValueError, match=r"unknown zoo model 'nope'.*\['m'\]"):
        zoo.load("nope", weights_dir=tmp_path)


def test_extra_tensor_is_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    _save(tmp_path)
    st = tmp_path / "m.safetensors"
    tensors = load_file(str(st))
    tensors["intruder"] = torch.zeros(1)
    save_file(tensors, str(st))
    with pytest.raises(ValueError, match="m.safetensors"):
        zoo.load("m", weights_dir=tmp_path)


def test_load_refuses_another_kind_from_the_json_alone(tmp_path, monkeypatch):
    _save(tmp_path)
    monkeypatch.setattr(zoo, "build", lambda *a, **k: pytest.fail("the network was built"))
    with pytest.raises(ValueError, match=r"^model: zoo model 'm' is a diffusion model; expected an idm model$"):
        zoo.load("m", weights_dir=tmp_path, kinds=("idm",))
    with pytest.raises(ValueError, match="expected a masked or classifier model"):
        zoo.load("m", weights_dir=tmp_path, kinds=("masked", "classifier"))
    with pytest.raises(FileNotFoundError, match="^model: no such file"):
        zoo.load(str(tmp_path / "nope.safetensors"))
