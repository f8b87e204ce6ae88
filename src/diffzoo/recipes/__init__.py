"""Training recipes of the zoo models (``diffzoo train RECIPE``): consumers of the trainer, the networks,
the data and the algorithms; nothing imports them but the CLI and tests.

* :mod:`~diffzoo.recipes.foundation` -- ``toy2d``, ``digits-unet``, ``digits-classifier``;
* :mod:`~diffzoo.recipes.tinysd` -- ``tinysd-vae``, ``tinysd-unet`` and ``shapes-classifier``;
* :mod:`~diffzoo.recipes.masked` -- ``masked-digits``, ``masked-shapes``;
* :mod:`~diffzoo.recipes.idm` -- ``idm-cs`` (invertible compressed-sensing chains).

The registry, the shared options (``--steps``, ..., ``--out-dir``, ``--zoo-name``) and :func:`ship` (the
one way a recipe writes into the zoo: only with ``--zoo-name``) are in :mod:`~diffzoo.recipes.registry`.
"""

from diffzoo.recipes import conditioning, distill, forensics, foundation, idm, masked, pfgmpp, provenance, tinysd
from diffzoo.recipes.registry import (
    ALIASES,
    Recipe,
    add_train_args,
    check_train_args,
    command_line,
    get_recipe,
    recipes,
    register_recipe,
    ship,
    train_config_from_args,
)

MODULES = (foundation, tinysd, masked, idm, pfgmpp, distill, forensics, conditioning, provenance)

__all__ = [
    "ALIASES",
    "MODULES",
    "Recipe",
    "add_train_args",
    "check_train_args",
    "command_line",
    "get_recipe",
    "recipes",
    "register_recipe",
    "ship",
    "train_config_from_args",
]
