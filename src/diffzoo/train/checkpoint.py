"""Atomic safetensors checkpoints: model, EMA model, optimizer state and a JSON header.

A checkpoint is one ``.safetensors`` file whose tensors are prefixed ``model.``, ``ema.`` and
``optim.`` (the optimizer's per-parameter state flattened to tensors, e.g. ``optim.3.exp_avg``), plus
``losses``; everything that is not a tensor (step, config, optimizer hyper-parameters) is JSON stored
in the file's metadata under the key ``diffzoo``. Files are written to a temporary name in the same
folder and renamed into place (``os.replace`` is atomic on POSIX), so a kill during a save leaves
either the old checkpoint or the new one, never a torn file: a run killed during a checkpoint write resumes
from the previous checkpoint, bit-identically to an uninterrupted run (``tests/test_determinism.py``).
The temporary files such a kill leaves behind (``.checkpoint.safetensors.*.tmp``) are removed by
:func:`remove_stale_temps` when the run resumes. ``checkpoint.json`` is a readable copy of the step and
config, written after the checkpoint itself; resuming reads only the safetensors file. Nothing is ever
unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from diffzoo.io import META_KEY, atomic_save_safetensors, atomic_write_json, read_safetensors

Tensor = torch.Tensor
CKPT_NAME = "checkpoint.safetensors"
CKPT_JSON = "checkpoint.json"
__all__ = [
    "CKPT_JSON",
    "CKPT_NAME",
    "META_KEY",
    "atomic_save_safetensors",
    "atomic_write_json",
    "load_checkpoint",
    "read_safetensors",
    "remove_stale_temps",
    "save_checkpoint",
]


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    ema_model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: dict[str, Any],
    losses: list[float],
) -> Path:
    """Save a resumable training checkpoint to ``out_dir/checkpoint.safetensors`` (+ a readable JSON)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema_model.state_dict().items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    meta = {"step": int(step), "config": config, "optimizer": opt_meta}
    path = atomic_save_safetensors(tensors, Path(out_dir) / CKPT_NAME, meta)
    atomic_write_json({"step": int(step), "config": config}, Path(out_dir) / CKPT_JSON)
    return path


def remove_stale_temps(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of checkpoint writes that were killed before their rename (hidden
    ``.checkpoint*.tmp`` files of :func:`diffzoo.io.atomic_path`); returns them. Call it only where no
    checkpoint is being written (the trainer calls it on resume, on the main process)."""
    d = Path(out_dir)
    if not d.is_dir():
        return []
    stale = [p for p in d.glob(".checkpoint*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(
    out_dir: str | os.PathLike, model: torch.nn.Module, ema_model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[float]] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns ``(step, losses)`` or ``None``."""
    path = Path(out_dir) / CKPT_NAME
    if not path.is_file():
        return None
    tensors, meta = read_safetensors(path)
    if "step" not in meta or "optimizer" not in meta:
        raise ValueError(f"{path}: not a diffzoo training checkpoint (missing step/optimizer header)")

    def part(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."))
        ema_model.load_state_dict(part("ema."))
        optimizer.load_state_dict(_unflatten_optimizer(part("optim."), meta["optimizer"]))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: checkpoint does not match this model/optimizer ({e})") from e
    losses = tensors["losses"].tolist() if "losses" in tensors else []
    return int(meta["step"]), losses
