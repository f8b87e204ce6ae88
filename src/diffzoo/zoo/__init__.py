"""The model zoo: shipped checkpoints as ``weights/<name>.safetensors`` + ``weights/<name>.json``.

``names()`` lists them, ``load(name)`` returns a :class:`ZooModel` (EMA weights, eval mode) whose
``denoiser()`` is a :class:`diffzoo.core.Denoiser` on the recorded schedule and prediction type.
The JSON records ``kind`` (see :data:`KINDS`), ``arch``, ``arch_config``, ``schedule``
(``{"name": ..., "kwargs": {...}}``), ``prediction_type``, ``sample_shape``, ``train_command``, ``seed``,
``steps`` and the measured ``metrics``. Commands dispatch on ``ZooModel.kind`` and read
``ZooModel.sample_shape``; nothing guesses them from the architecture.

Safety: only safetensors are read (no pickle, so loading never runs code); ``.pt``/``.pth``/``.bin``/
``.ckpt``/``.pkl`` files are refused; a torn file, a missing or unexpected tensor, or a state dict of
another architecture raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.schedules import NoiseSchedule, get_schedule
from diffzoo.io import atomic_save_safetensors, atomic_write_json, read_safetensors
from diffzoo.models import build

WEIGHTS_DIR = Path(__file__).parent / "weights"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
REQUIRED_KEYS = ("arch", "arch_config")
MASKED_PREDICTION = "masked-x0-logits"

#: What a zoo model is, which decides what the commands can do with it:
#: ``diffusion`` (a Gaussian denoiser: ``diffzoo sample`` with the continuous samplers, ``restore``),
#: ``masked`` (masked discrete diffusion over tokens: the discrete samplers),
#: ``latent-diffusion`` (a text-to-image latent model: ``invert``, ``edit``),
#: ``idm`` (an invertible reconstruction chain for one measurement operator: ``restore --method idm``),
#: ``classifier`` (a feature extractor / classifier used by metrics).
KINDS = ("diffusion", "masked", "latent-diffusion", "idm", "classifier")


def default_kind(config: dict[str, Any]) -> str:
    """The kind of a config that does not record one (older JSONs): the one rule, in one place."""
    if config.get("prediction_type") == MASKED_PREDICTION:
        return "masked"
    if config.get("arch") == "tinysd":
        return "latent-diffusion"
    if config.get("arch") == "idm_cs":
        return "idm"
    return "diffusion" if config.get("schedule") else "classifier"


@dataclass
class ZooModel:
    """A loaded zoo model: its name, JSON config and network (EMA weights, eval mode)."""

    name: str
    config: dict[str, Any]
    model: torch.nn.Module
    path: Path | None = field(default=None, repr=False)

    @property
    def schedule(self) -> NoiseSchedule | None:
        sch = self.config.get("schedule")
        if not sch:
            return None
        return get_schedule(sch["name"], **sch.get("kwargs", {}))

    @property
    def prediction_type(self) -> str:
        return self.config.get("prediction_type", "epsilon")

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.config.get("metrics", {}))

    def denoiser(self, **kw: Any) -> Denoiser:
        """A core :class:`~diffzoo.core.Denoiser` around this network (``cond`` = class labels where
        the model is class-conditional; the null class is ``config['null_class']``)."""
        schedule = self.schedule
        if schedule is None:
            raise ValueError(f"{self.name}: this zoo model is not a diffusion model (no schedule in its JSON)")
        return Denoiser(self.model, schedule, self.prediction_type, **kw)

    @property
    def null_class(self) -> int | None:
        return self.config.get("null_class")

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`."""
        return self.config["kind"]

    def require_kind(self, *kinds: str, arg: str = "model") -> ZooModel:
        """This model, or a ``ValueError`` naming ``arg`` when its kind is not one of ``kinds``."""
        check_kind(self.name, self.kind, kinds, arg)
        return self

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample: ``config['sample_shape']``, else the network's own ``sample_shape``."""
        shape = self.config.get("sample_shape") or getattr(self.model, "sample_shape", None)
        if not shape:
            raise ValueError(f"shape: zoo model {self.name!r} records no sample_shape; pass one explicitly")
        return tuple(int(v) for v in shape)


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def check_kind(name: str, kind: str, kinds: Sequence[str], arg: str = "model") -> None:
    """``ValueError`` naming ``arg`` when zoo model ``name``'s ``kind`` is not one of ``kinds``."""
    if kind not in kinds:
        raise ValueError(f"{arg}: zoo model {name!r} is {_a(kind)} model; expected {_a(' or '.join(kinds))} model")


def _weights_dir(weights_dir: str | os.PathLike | None) -> Path:
    return Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR


def names(weights_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the models with both a ``.safetensors`` and a ``.json`` file."""
    d = _weights_dir(weights_dir)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.safetensors") if p.with_suffix(".json").is_file())


def _resolve(name: str, weights_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    p = Path(name)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{name}: refusing to load a pickle-based checkpoint ({p.suffix}); "
                         "diffzoo only loads .safetensors files (pickle can execute code)")
    if p.suffix == ".safetensors":
        st = p
        if not st.is_file():
            raise FileNotFoundError(f"model: no such file {name!r}")
    else:
        st = _weights_dir(weights_dir) / f"{name}.safetensors"
        if not st.is_file():
            for suf in PICKLE_SUFFIXES:
                if st.with_suffix(suf).is_file():
                    raise ValueError(f"{st.with_suffix(suf)}: refusing to load a pickle-based checkpoint; "
                                     "diffzoo only loads .safetensors files")
            raise ValueError(f"model: unknown zoo model {name!r}; expected one of {names(weights_dir)}")
    js = st.with_suffix(".json")
    if not js.is_file():
        raise FileNotFoundError(f"model: {str(js)!r} is missing (the JSON config of {st.name})")
    return st, js


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a zoo JSON config."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable zoo config ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    cfg.setdefault("kind", default_kind(cfg))
    if cfg["kind"] not in KINDS:
        raise ValueError(f"{path}: unknown kind {cfg['kind']!r}; expected one of {list(KINDS)}")
    return cfg


def load(name: str, weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         kinds: Sequence[str] | None = None, arg: str = "model") -> ZooModel:
    """Load zoo model ``name`` (or a path to a ``.safetensors`` file with its ``.json`` beside it).

    ``kinds``: the kinds the caller can use; another kind is refused (``ValueError`` naming ``arg``) from
    the JSON alone, before the weights are read or the network is built.
    """
    st, js = _resolve(name, weights_dir)
    cfg = read_config(js)
    if kinds is not None:
        check_kind(st.stem, cfg["kind"], kinds, arg)
    tensors, _ = read_safetensors(st)
    try:
        model = build(cfg["arch"], **cfg["arch_config"])
    except TypeError as e:
        raise ValueError(f"{js}: arch_config does not fit arch {cfg['arch']!r} ({e})") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{st}: weights do not match arch {cfg['arch']!r} with its arch_config "
                         f"({str(e).splitlines()[0]} ...)") from e
    model.to(device).eval().requires_grad_(False)
    return ZooModel(st.stem, cfg, model, st)


def save(name: str, model: torch.nn.Module, arch: str, arch_config: dict[str, Any], *,
         schedule: dict[str, Any] | None = None, prediction_type: str | None = None,
         train_command: str = "", seed: int | None = None, steps: int | None = None,
         metrics: dict[str, Any] | None = None, weights_dir: str | os.PathLike | None = None,
         kind: str | None = None, sample_shape: tuple[int, ...] | None = None, **extra: Any) -> Path:
    """Ship ``model``'s weights and JSON config to the zoo (both files written atomically).

    ``schedule`` is ``{"name": <core schedule name>, "kwargs": {...}}``; ``kind`` defaults to
    :func:`default_kind`, ``sample_shape`` to the network's own; ``extra`` keys (e.g.
    ``null_class``, ``dataset``) are stored in the JSON as well.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name: expected a plain file stem, got {name!r}")
    d = _weights_dir(weights_dir)
    cfg = {"name": name, "arch": arch, "arch_config": arch_config, "schedule": schedule,
           "prediction_type": prediction_type, "train_command": train_command, "seed": seed, "steps": steps,
           "metrics": metrics or {}, **extra}
    cfg["kind"] = kind or default_kind(cfg)
    if cfg["kind"] not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {cfg['kind']!r}")
    shape = sample_shape or getattr(model, "sample_shape", None)
    if shape:
        cfg["sample_shape"] = [int(v) for v in shape]
    path = atomic_save_safetensors(dict(model.state_dict()), d / f"{name}.safetensors", {"name": name})
    atomic_write_json(cfg, d / f"{name}.json")
    return path


def report(weights_dir: str | os.PathLike | None = None) -> str:
    """A markdown table of the shipped models: architecture, size, training and recorded metrics."""
    rows = []
    for n in names(weights_dir):
        zm = load(n, weights_dir)
        params = sum(p.numel() for p in zm.model.parameters())
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in sorted(zm.metrics.items()))
        rows.append(f"| {n} | {zm.config['arch']} | {params:,} | {zm.config.get('steps')} | {zm.config.get('seed')} | "
                    f"{metrics} | `{zm.config.get('train_command', '')}` |")
    head = "| model | arch | params | steps | seed | metrics | train command |\n|---|---|---|---|---|---|---|"
    return "\n".join([head, *rows])


__all__ = ["KINDS", "WEIGHTS_DIR", "ZooModel", "check_kind", "default_kind", "load", "names", "read_config", "report",
           "save"]
