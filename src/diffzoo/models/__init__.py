"""Small networks: MLP denoiser (toy data), class-conditional digits UNet, digit classifier.

Build any registered architecture with ``diffzoo.models.registry.build(arch, **config)``.
"""

from diffzoo.models.registry import archs, build, register_arch

__all__ = ["archs", "build", "register_arch"]
