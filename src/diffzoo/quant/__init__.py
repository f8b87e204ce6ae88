"""Post-training quantization of diffusion models: PTQ4DM, Q-Diffusion and QuEST-style, simulated exactly
as the papers do (fake quantization) and lowered to real int8 kernels (:mod:`diffzoo.quant.int8`).

Papers: *Post-training Quantization on Diffusion Models* (PTQ4DM, arXiv 2211.15736); *Q-Diffusion:
Quantizing Diffusion Models* (arXiv 2302.04304); *QuEST: Low-bit Diffusion Model Quantization via Efficient
Selective Finetuning* (arXiv 2402.03666).
"""

from diffzoo.quant.api import METHODS, Method, QuantResult, quantize
from diffzoo.quant.calib import CALIBRATIONS, CalibSet, ndtc, record_calls, select, timestep_aware, uniform
from diffzoo.quant.layers import QuantAttnProcessor, QuantLayer, QuantSelfAttention
from diffzoo.quant.model import QuantSpec, block_units, calibrating, prepare, quant_layers, set_mode
from diffzoo.quant.quantizer import BITS, ActQuantizer, TimeContext, WeightQuantizer, fake_quant, round_ste

__all__ = [
    "BITS",
    "CALIBRATIONS",
    "METHODS",
    "ActQuantizer",
    "CalibSet",
    "Method",
    "QuantAttnProcessor",
    "QuantLayer",
    "QuantResult",
    "QuantSelfAttention",
    "QuantSpec",
    "TimeContext",
    "WeightQuantizer",
    "block_units",
    "calibrating",
    "fake_quant",
    "ndtc",
    "prepare",
    "quant_layers",
    "quantize",
    "record_calls",
    "round_ste",
    "select",
    "set_mode",
    "timestep_aware",
    "uniform",
]
