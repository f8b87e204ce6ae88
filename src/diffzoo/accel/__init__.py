"""Acceleration without retraining (Faster Diffusion encoder propagation, DeepCache), PFGM++ and DPM-OT."""
