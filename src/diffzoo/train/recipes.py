"""Training-recipe registry behind ``diffzoo train RECIPE``.

A recipe is a function ``recipe(args: argparse.Namespace) -> dict`` that trains one zoo model with
diffzoo's trainer and returns its final metrics. Capabilities define recipes in their own
``recipes.py`` and register them with :func:`register_recipe`; this module imports those modules.
Each recipe also declares its command-line options via ``add_args(parser)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable

from diffzoo.core.errors import check_choice

RECIPE_MODULES = (
    "diffzoo.zoo.recipes",
    "diffzoo.discrete.recipes",
    "diffzoo.editing.recipes",
    "diffzoo.inverse.recipes",
)


@dataclass
class Recipe:
    name: str
    run: Callable[[argparse.Namespace], dict]
    add_args: Callable[[argparse.ArgumentParser], None]
    help: str


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None
                    ) -> Callable[[Callable[[argparse.Namespace], dict]], Callable[[argparse.Namespace], dict]]:
    def deco(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
        _RECIPES[name] = Recipe(name, fn, add_args or (lambda p: None), help)
        return fn
    return deco


def recipes() -> dict[str, Recipe]:
    for mod in RECIPE_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)
    return dict(_RECIPES)


def get_recipe(name: str) -> Recipe:
    all_r = recipes()
    check_choice(name, all_r, "recipe")
    return all_r[name]
