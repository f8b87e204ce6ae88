"""The model zoo: shipped checkpoints as ``weights/<name>.safetensors`` + ``weights/<name>.json``.

``names()`` lists them, ``load(name)`` returns a :class:`ZooModel` (EMA weights, eval mode) whose
``denoiser()`` is a :class:`diffzoo.core.Denoiser` on the recorded schedule and prediction type.
The JSON records ``kind`` (see :data:`KINDS`), ``arch``, ``arch_config``, ``schedule``
(``{"name": ..., "kwargs": {...}}``), ``prediction_type``, ``sample_shape``, ``train_command``, ``seed``,
``steps`` and the measured ``metrics``. Commands dispatch on ``ZooModel.kind`` and read
``ZooModel.sample_shape``; nothing guesses them from the architecture.

Safety: only safetensors are read (no pickle, so loading never runs code); ``.pt``/``.pth``/``.bin``/
``.ckpt``/``.pkl`` files are refused, and so is a pickle renamed to ``.safetensors`` (from its first
bytes, never unpickled). A torn file, a header that claims more bytes than the file holds, a missing or
unexpected tensor, a tensor of the wrong shape or dtype, non-finite weights, or a state dict of another
architecture raises ``ValueError`` naming the file (and the tensor).

The JSON config is checked by :func:`read_config`: a known key of the wrong type (``arch_config`` not an
object, ``sample_shape`` not a list of positive integers, an unknown ``kind``, a malformed ``schedule``,
...) is a ``ValueError`` naming the file and the key; an *unknown* top-level key is kept and logged as a
warning (configs written by a newer diffzoo still load).

Writes never leave a half pair: :func:`save` writes the new JSON beside the old one under a hidden
``.<name>.json.<digest>.pending`` name, then replaces the weights (one atomic rename: the commit point;
the weights' header records the SHA-256 of the JSON they belong to), then renames the JSON into place.
A process killed before the commit leaves the previous pair untouched; one killed between the two renames
leaves weights whose recorded digest matches the pending JSON, and the next :func:`names` / :func:`load`
finishes the rename (or, in a read-only folder, reads the pending JSON). :func:`names` lists only
complete pairs. The hidden temporary files of killed saves are removed by the next save of that name
(two processes saving the *same* name at once are not supported: the last rename wins, per file).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffzoo.core.denoiser import Denoiser
from diffzoo.core.parameterization import canonical_prediction_type
from diffzoo.core.schedules import NoiseSchedule, get_schedule
from diffzoo.io import atomic_save_safetensors, atomic_write_text, read_safetensors, read_safetensors_metadata
from diffzoo.models import build
from diffzoo.zoo.quant import load_quantized

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
REQUIRED_KEYS = ("arch", "arch_config")
MASKED_PREDICTION = "masked-x0-logits"
#: Key of the weights' header recording the SHA-256 of the JSON saved with them (see :func:`save`).
CONFIG_DIGEST = "config_sha256"
#: A zoo JSON larger than this (16 MiB) is refused before it is parsed.
MAX_CONFIG_BYTES = 16 * 2**20

#: What a zoo model is, which decides what the commands can do with it:
#: ``diffusion`` (a Gaussian denoiser: ``diffzoo sample`` with the continuous samplers, ``restore``),
#: ``masked`` (masked discrete diffusion over tokens: the discrete samplers),
#: ``latent-diffusion`` (a text-to-image latent model: ``invert``, ``edit``),
#: ``idm`` (an invertible reconstruction chain for one measurement operator: ``restore --method idm``),
#: ``classifier`` (a feature extractor / classifier used by metrics).
#: ``pfgmpp`` (a PFGM++ x0-model on EDM's schedule; its prior depends on ``augment_dim``, so a Gaussian
#: sampler must not take it: ``diffzoo.accel.pfgmpp.pfgmpp_sample``).
#: ``generator`` (a distilled one-/few-step generator: ``diffzoo sample`` runs
#: :func:`diffzoo.distill.generate.generate` as its JSON's ``generator`` spec says).
#: ``multiview`` (a text-conditional K-view normal+depth denoiser: ``diffzoo sample multiview``, fused to 3-D by
#: :mod:`diffzoo.conditioning`), ``tryon`` (a garment-conditioned inpainting denoiser: ``diffzoo tryon``).
KINDS = (
    "diffusion",
    "masked",
    "latent-diffusion",
    "idm",
    "classifier",
    "pfgmpp",
    "generator",
    "multiview",
    "tryon",
    "watermark",
)


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
        return dict(self.config.get("metrics") or {})

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
    """Names of the models with both a ``.safetensors`` and a ``.json`` file (a save killed between its
    two renames is finished first, see :func:`save`; a half pair is never listed)."""
    d = _weights_dir(weights_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("*.safetensors"):
        js = _settle(p)
        if js is not None and js.is_file():
            out.append(p.stem)
    return sorted(out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pending_json(js: Path, digest: str) -> Path:
    """Where :func:`save` writes the JSON of weights whose header records ``digest`` before committing."""
    return js.with_name(f".{js.name}.{digest[:16]}.pending")


def _settle(st: Path) -> Path | None:
    """The JSON that belongs to weights ``st``: ``st.with_suffix('.json')``, after finishing a :func:`save`
    that was killed between renaming the weights and renaming their JSON (the weights' header records the
    pending JSON's digest). Returns the pending file itself when the rename cannot be finished (a
    read-only folder); ``None`` when there is no JSON at all."""
    js = st.with_suffix(".json")
    if not glob.glob(glob.escape(str(st.parent / f".{js.name}.")) + "*.pending"):
        return js if js.is_file() else None  # the common case: no save in flight, no header read
    try:
        digest = read_safetensors_metadata(st).get(CONFIG_DIGEST)
    except (OSError, ValueError):
        digest = None  # a torn file: load() reports it
    if isinstance(digest, str) and len(digest) == 64:
        pending = _pending_json(js, digest)
        if pending.is_file() and not (js.is_file() and _sha256(js) == digest) and _sha256(pending) == digest:
            try:
                os.replace(pending, js)
                log.warning("%s: finished an interrupted save (renamed %s into place)", js, pending.name)
            except OSError:
                return pending
    return js if js.is_file() else None


def _resolve(name: str, weights_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    p = Path(name)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{name}: refusing to load a pickle-based checkpoint ({p.suffix}); "
            "diffzoo only loads .safetensors files (pickle can execute code)"
        )
    if p.suffix == ".safetensors":
        st = p
        if not st.is_file():
            raise FileNotFoundError(f"model: no such file {name!r}")
    else:
        st = _weights_dir(weights_dir) / f"{name}.safetensors"
        if not st.is_file():
            for suf in PICKLE_SUFFIXES:
                if st.with_suffix(suf).is_file():
                    raise ValueError(
                        f"{st.with_suffix(suf)}: refusing to load a pickle-based checkpoint; "
                        "diffzoo only loads .safetensors files"
                    )
            raise ValueError(f"model: unknown zoo model {name!r}; expected one of {names(weights_dir)}")
    js = _settle(st)
    if js is None:
        raise FileNotFoundError(f"model: {str(st.with_suffix('.json'))!r} is missing (the JSON config of {st.name})")
    return st, js


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _check_schedule(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and isinstance(v.get("name"), str)
        and isinstance(v.get("kwargs", {}), dict)
        and set(v) <= {"name", "kwargs"}
    )


def _check_shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(k) and k > 0 for k in v)


#: Top-level keys of a zoo JSON: what each must be (``None`` is allowed where the key is optional), and
#: what the check says in the error. Other keys are kept and logged as unknown.
CONFIG_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "arch_config": (lambda v: isinstance(v, dict), "an object of the architecture's keyword arguments"),
    "kind": (lambda v: v in KINDS, f"one of {list(KINDS)}"),
    "name": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "schedule": (_optional(_check_schedule), 'null or {"name": <schedule name>, "kwargs": {...}}'),
    "prediction_type": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "sample_shape": (_optional(_check_shape), "null or a non-empty list of positive integers"),
    "null_class": (_optional(lambda v: _is_int(v) and v >= 0), "null or a non-negative integer"),
    "seed": (_optional(_is_int), "null or an integer"),
    "steps": (_optional(lambda v: _is_int(v) and v >= 0), "null or a non-negative integer"),
    "train_command": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "metrics": (_optional(lambda v: isinstance(v, dict)), "null or an object"),
    "dataset": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "base": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "mask_schedule": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "operator": (_optional(lambda v: isinstance(v, dict)), "null or an object"),
    "scaling_factor": (_optional(lambda v: _is_number(v) and math.isfinite(v) and v > 0), "null or a positive number"),
    "augment_dim": (_optional(lambda v: _is_number(v) and v > 2), "null or a number > 2 (PFGM++'s D)"),
    "detector": (_optional(lambda v: isinstance(v, dict)), "null or an object (forensic detector settings)"),
    "generator": (_optional(lambda v: isinstance(v, dict) and isinstance(v.get("type"), str)), 'null or {"type": ...}'),
    "teacher": (_optional(lambda v: isinstance(v, str)), "null or a string"),
    "quant": (_optional(lambda v: isinstance(v, dict)), "null or an object (a quantized entry, diffzoo.zoo.quant)"),
    "watermark": (
        _optional(lambda v: isinstance(v, dict) and isinstance(v.get("trigger"), str)),
        'null or {"trigger": ..., "message": ..., "detector": ...} (a trigger-gated generative watermark)',
    ),
}


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check a zoo JSON config: ``ValueError`` naming the file (and the key) when it is not a
    JSON object, lacks ``arch`` / ``arch_config``, has a known key of the wrong type (see
    :data:`CONFIG_KEYS`), a schedule :func:`~diffzoo.core.schedules.get_schedule` cannot build, or a
    prediction type the core does not know. Unknown keys are kept and logged as a warning."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"{path}: unreadable zoo config ({size:,} bytes; a zoo JSON is at most {MAX_CONFIG_BYTES:,})"
            )
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: unreadable zoo config ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    cfg.setdefault("kind", default_kind(cfg))
    if cfg["kind"] not in KINDS:
        raise ValueError(f"{path}: unknown kind {cfg['kind']!r}; expected one of {list(KINDS)}")
    for key, (ok, what) in CONFIG_KEYS.items():
        if key in cfg and not ok(cfg[key]):
            raise ValueError(f"{path}: {key}: expected {what}, got {json.dumps(cfg[key])[:80]}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        log.warning("%s: unknown key(s) %s (kept, not used by diffzoo)", path, unknown)
    sch = cfg.get("schedule")
    if sch:
        try:
            get_schedule(sch["name"], **sch.get("kwargs", {}))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: " + ("" if str(e).startswith("schedule:") else "schedule: ") + str(e)) from None
    pred = cfg.get("prediction_type")
    if pred is not None and pred != MASKED_PREDICTION:
        try:
            canonical_prediction_type(pred)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    if cfg["kind"] == "diffusion" and not sch:
        raise ValueError(f"{path}: schedule: a diffusion model needs one; got {json.dumps(sch)}")
    if cfg["kind"] == "masked" and pred != MASKED_PREDICTION:
        raise ValueError(f"{path}: prediction_type: a masked model has {MASKED_PREDICTION!r}, got {pred!r}")
    return cfg


def check_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """``ValueError`` naming ``path`` and the tensors when ``tensors`` are not exactly ``model``'s state
    dict: a missing or unexpected key, a shape or a dtype that differs (nothing is cast silently), or a
    non-finite value in a floating-point tensor."""
    want = model.state_dict()
    problems = []
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing:
        problems.append(f"missing {_few(missing)}")
    if extra:
        problems.append(f"unexpected {_few(extra)}")
    for k in sorted(set(want) & set(tensors)):
        a, b = tensors[k], want[k]
        if tuple(a.shape) != tuple(b.shape):
            problems.append(f"{k} has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        elif a.dtype != b.dtype:
            problems.append(
                f"{k} has dtype {str(a.dtype).replace('torch.', '')}, expected {str(b.dtype).replace('torch.', '')}"
            )
        elif a.is_floating_point() and not bool(torch.isfinite(a).all()):
            problems.append(f"{k} has non-finite values")
        if len(problems) >= 3:
            break
    if problems:
        raise ValueError(
            f"{path}: weights do not match arch {type(model).__name__} built from its JSON: "
            + "; ".join(problems[:3])
            + (" ..." if len(problems) > 3 else "")
        )


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def kind_of(name: str, weights_dir: str | os.PathLike | None = None) -> str:
    """The kind of zoo model ``name`` (or ``.safetensors`` path), from its JSON alone (no weights read)."""
    _, js = _resolve(name, weights_dir)
    return str(read_config(js)["kind"])


def load(
    name: str,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    kinds: Sequence[str] | None = None,
    arg: str = "model",
) -> ZooModel:
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
    except Exception as e:  # noqa: BLE001 -- a hostile arch_config: TypeError, ValueError, RuntimeError, ...
        if str(e).startswith("arch:"):  # an unknown architecture name
            raise ValueError(f"{js}: {e}") from None
        raise ValueError(
            f"{js}: arch_config does not fit arch {cfg['arch']!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if cfg.get("quant") is not None:  # a quantized entry: packed codes + scales (diffzoo.zoo.quant)
        model = load_quantized(st, cfg, tensors, model)
    else:
        check_weights(st, tensors, model)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"{st}: weights do not match arch {cfg['arch']!r} with its arch_config ({str(e).splitlines()[0]} ...)"
            ) from None
    model.to(device).eval().requires_grad_(False)
    return ZooModel(st.stem, cfg, model, st)


def save(
    name: str,
    model: torch.nn.Module,
    arch: str,
    arch_config: dict[str, Any],
    *,
    schedule: dict[str, Any] | None = None,
    prediction_type: str | None = None,
    train_command: str = "",
    seed: int | None = None,
    steps: int | None = None,
    metrics: dict[str, Any] | None = None,
    weights_dir: str | os.PathLike | None = None,
    kind: str | None = None,
    sample_shape: tuple[int, ...] | None = None,
    **extra: Any,
) -> Path:
    """Ship ``model``'s weights and JSON config to the zoo: the previous pair stays whole until the new
    weights are renamed into place, and a kill after that is finished by the next read (module docstring).

    ``schedule`` is ``{"name": <core schedule name>, "kwargs": {...}}``; ``kind`` defaults to
    :func:`default_kind`, ``sample_shape`` to the network's own; ``extra`` keys (e.g.
    ``null_class``, ``dataset``) are stored in the JSON as well.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name: expected a plain file stem, got {name!r}")
    d = _weights_dir(weights_dir)
    cfg = {
        "name": name,
        "arch": arch,
        "arch_config": arch_config,
        "schedule": schedule,
        "prediction_type": prediction_type,
        "train_command": train_command,
        "seed": seed,
        "steps": steps,
        "metrics": metrics or {},
        **extra,
    }
    cfg["kind"] = kind or default_kind(cfg)
    if cfg["kind"] not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {cfg['kind']!r}")
    shape = sample_shape or getattr(model, "sample_shape", None)
    if shape:
        cfg["sample_shape"] = [int(v) for v in shape]
    st, js = d / f"{name}.safetensors", d / f"{name}.json"
    if st.is_dir() or js.is_dir():
        raise ValueError(f"name: {str(st)!r} or {str(js)!r} is a folder")
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    pending = _pending_json(js, digest)
    atomic_write_text(pending, text)  # 1. the new JSON, complete, beside the old pair
    try:  # 2. the commit point: one atomic rename of the weights, whose header names the JSON's digest
        path = atomic_save_safetensors(dict(model.state_dict()), st, {"name": name, CONFIG_DIGEST: digest})
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, js)  # 3. the JSON into place (a kill before this is finished by _settle)
    for prefix, suffix in ((f".{js.name}.", ".pending"), (f"..{js.name}.", ".tmp"), (f".{st.name}.", ".tmp")):
        for stale in d.glob(glob.escape(prefix) + "*" + suffix):  # what killed saves of this name left
            stale.unlink(missing_ok=True)
    return path


def report(weights_dir: str | os.PathLike | None = None) -> str:
    """A markdown table of the shipped models: architecture, size, training and recorded metrics."""
    rows = []
    for n in names(weights_dir):
        zm = load(n, weights_dir)
        params = sum(p.numel() for p in zm.model.parameters())
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(zm.metrics.items())
        )
        rows.append(
            f"| {n} | {zm.config['arch']} | {params:,} | {zm.config.get('steps')} | {zm.config.get('seed')} | "
            f"{metrics} | `{zm.config.get('train_command', '')}` |"
        )
    head = "| model | arch | params | steps | seed | metrics | train command |\n|---|---|---|---|---|---|---|"
    return "\n".join([head, *rows])


__all__ = [
    "CONFIG_KEYS",
    "KINDS",
    "WEIGHTS_DIR",
    "ZooModel",
    "check_kind",
    "kind_of",
    "check_weights",
    "default_kind",
    "load",
    "names",
    "read_config",
    "report",
    "save",
]
