"""diffzoo: diffusion-model research in one small, exact, tested toolkit."""

__version__ = "0.1.0"
