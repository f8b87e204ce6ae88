"""Shipped IDM chains (kind ``idm``): the network together with the measurement operator it was trained for."""

from __future__ import annotations

from typing import Any

from diffzoo.inverse.operators import CompressedSensing
from diffzoo.zoo import ZooModel, load


def load_idm(name: str) -> tuple[Any, CompressedSensing, ZooModel]:
    """A shipped IDM chain (``idm-*``), its compressed-sensing operator (from the JSON's ``operator``) and
    the :class:`ZooModel`."""
    zm = load(name, kinds=("idm",))
    opc = zm.config.get("operator") or {}
    op = CompressedSensing(
        tuple(zm.config.get("sample_shape") or (1, 8, 8)), float(opc["ratio"]), True, int(opc.get("seed", 0))
    )
    return zm.model, op, zm
