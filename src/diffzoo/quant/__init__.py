"""Post-training quantization: PTQ4DM, Q-Diffusion, QuEST (simulated) and real int8 kernels."""
