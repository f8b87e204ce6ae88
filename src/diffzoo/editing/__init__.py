"""Text-guided editing of images with latent diffusion models.

* :mod:`diffzoo.latent.model` -- the :class:`LatentModel` (UNet + VAE + text encoder) every method uses.
* :mod:`diffzoo.latent.attention` -- prompt-to-prompt attention control (Hertz et al. 2022) through
  diffusers attention processors: replace / refine / reweight, self-attention injection, local blend.
* :mod:`diffzoo.editing.ddcm` -- InfEdit's virtual inversion (DDCM sampler, Xu et al. CVPR 2024).
* :mod:`diffzoo.editing.anchored` -- anchored initialisation / SDEdit (noise an anchor latent, denoise).
* :mod:`diffzoo.editing.cli` -- the ``diffzoo invert`` and ``diffzoo edit`` commands.

Sub-modules are imported on use (``from diffzoo.latent.attention import ...``), so that this package
stays importable while optional parts are missing.
"""
