"""Text-guided editing of images with latent diffusion models: one registry of edit methods.

* :mod:`diffzoo.editing.api` -- :func:`edit_image` / :func:`reconstruct_image` over :data:`EDIT_METHODS`
  (ddim, edict, ddpm, null_text, direct -- the inversion methods of :mod:`diffzoo.inversion` followed by
  a prompt-to-prompt edit pass -- and infedit, sdedit), one result type (:class:`EditResult`), each
  method's default guidance in its entry; :func:`register_edit_method` adds methods.
* :mod:`diffzoo.editing.ddcm` -- InfEdit's virtual inversion (DDCM sampler, Xu et al. CVPR 2024).
* :mod:`diffzoo.editing.anchored` -- anchored initialisation / SDEdit (noise an anchor latent, denoise).

The model and attention control live one layer down: :mod:`diffzoo.latent.model`
(:class:`~diffzoo.latent.model.LatentModel`, UNet + VAE + text encoder) and
:mod:`diffzoo.latent.attention` (prompt-to-prompt controllers, local blend, token alignment). The
``diffzoo edit`` / ``diffzoo invert`` commands (:mod:`diffzoo.cli.edit`), ``diffzoo bench editing`` and
the demo call :func:`edit_image` / :func:`reconstruct_image`.
"""

from diffzoo.editing.api import (
    EDIT_METHODS,
    P2P_MODES,
    EditFn,
    EditMethod,
    EditOptions,
    EditResult,
    edit_by_inversion,
    edit_image,
    get_edit_method,
    inversion_edit_guidance,
    make_controller,
    reconstruct_image,
    register_edit_method,
)

__all__ = [
    "EDIT_METHODS",
    "P2P_MODES",
    "EditFn",
    "EditMethod",
    "EditOptions",
    "EditResult",
    "edit_by_inversion",
    "edit_image",
    "get_edit_method",
    "inversion_edit_guidance",
    "make_controller",
    "reconstruct_image",
    "register_edit_method",
]
