"""Few-step and one-step students distilled from a diffusion teacher."""
