"""``diffzoo quantize``: post-training quantization of a zoo model into a new (quantized) zoo entry.

Example::

    diffzoo quantize digits-unet --method qdiffusion --wbits 4 --abits 8 --name digits-unet-w4a8
    diffzoo sample digits-unet-w4a8 --guidance 2 --class-label all -n 64 --out q.png
    diffzoo quantize digits-unet --method minmax --wbits 8 --abits 8 --int8 --name digits-unet-int8

Methods: ``minmax``, ``ptq4dm``, ``qdiffusion``, ``quest`` (:data:`diffzoo.quant.METHODS`). Calibration:
the network's own inputs along the full-precision DDIM sampler (``--calib-samples`` trajectories of
``--calib-steps`` steps, classifier-free guidance as the model was evaluated), selected as the method
says (or ``--calibration``). ``--int8`` calibrates activations for the real int8 kernel (codes 0..127:
fbgemm's reduce_range) and stores the entry so that loading puts its conv/linear layers on torch.ao
int8 kernels; a layer with no integer kernel is an error before anything is written. TinySD
(``latent-diffusion``) quantizes its UNet and VAE decoder. The entry is written atomically
(``diffzoo.zoo.save``) into ``--weights-dir`` (default: the zoo's folder); its packed size is printed.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time

import torch

from diffzoo import zoo
from diffzoo.quant import BITS, CALIBRATIONS, METHODS, quantize
from diffzoo.quant.int8 import lower, observe_outputs, weight_bytes
from diffzoo.zoo.latent import latent_model
from diffzoo.zoo.quant import PackedModel, diffusion_bank, latent_banks, quant_config


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    zm = zoo.load(args.model, kinds=("diffusion", "latent-diffusion"))
    if zm.config.get("quant") is not None:
        raise ValueError(f"model: {args.model!r} is already quantized")
    name = args.name or f"{zm.name}-{args.method}-w{args.wbits}a{args.abits}" + ("-int8" if args.int8 else "")
    g = torch.Generator().manual_seed(args.seed)
    qmax = 127 if args.int8 else None  # fbgemm's reduce_range (the 8-bit first/last layers need it)
    if zm.kind == "diffusion":
        guidance = args.guidance if args.guidance is not None else float(zm.metrics.get("guidance", 1.0))
        bank = diffusion_bank(
            zm.denoiser(),
            zm.sample_shape,
            args.calib_samples,
            args.calib_steps,
            guidance,
            zm.null_class,
            zm.null_class,
            args.seed,
        )
        targets = {"": (zm.model, bank)}
    else:
        lm = latent_model(zm.model)
        guidance = args.guidance if args.guidance is not None else 5.0
        banks = latent_banks(lm, args.calib_samples, args.calib_steps, guidance, args.seed)
        targets = {k: (zm.model.get_submodule(k), banks[k]) for k in ("unet", "vae.decoder")}
    specs, info = {}, {}
    for sub, (net, bank) in targets.items():
        res = quantize(
            net,
            bank,
            args.method,
            args.wbits,
            args.abits,
            calibration=args.calibration,
            n_calib=args.n_calib,
            split=False if args.no_split else None,
            iters=args.iters,
            act_qmax=qmax,
            generator=g,
            progress=args.progress,
        )
        specs[sub] = res.spec
        info[sub or "net"] = dict(res.settings, calibration=res.calibration, calib_rows=res.calib_rows)
        if args.int8:
            observe_outputs(net, bank.batches(64))
            lower(copy.deepcopy(net), strict=True)  # a layer with no integer kernel fails here, before saving
    sizes = {k: weight_bytes(t[0]) for k, t in targets.items()}
    quant = quant_config(
        specs,
        method=args.method,
        wbits=args.wbits,
        abits=args.abits,
        int8=bool(args.int8),
        base=zm.name,
        settings=info,
    )
    cfg = zm.config
    extra = {k: cfg[k] for k in ("null_class", "dataset", "scaling_factor") if cfg.get(k) is not None}
    path = zoo.save(
        name,
        PackedModel(zm.model),
        cfg["arch"],
        cfg["arch_config"],
        schedule=cfg.get("schedule"),
        prediction_type=cfg.get("prediction_type"),
        train_command="diffzoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        seed=args.seed,
        steps=cfg.get("steps"),
        metrics={"weight_bytes": sizes, "quantize_wall_s": round(time.perf_counter() - t0, 1)},
        weights_dir=args.weights_dir,
        kind=zm.kind,
        sample_shape=tuple(cfg["sample_shape"]) if cfg.get("sample_shape") else None,
        quant=quant,
        **extra,
    )
    fp = sum(v["float32"] for v in sizes.values())
    packed = sum(v["packed"] for v in sizes.values())
    print(
        f"{name}: {args.method} W{args.wbits}A{args.abits}{' int8' if args.int8 else ''} from {zm.name}; "
        f"quantized-layer weights {fp / 1024:.1f} KiB float32 -> {packed / 1024:.1f} KiB packed; "
        f"file {path.stat().st_size / 1024:.1f} KiB ({time.perf_counter() - t0:.1f} s)\nwrote {path}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="post-training quantization of a zoo model (PTQ4DM, Q-Diffusion, QuEST, min-max; int8)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="zoo model name (a diffusion or latent-diffusion model)")
    p.add_argument("--method", default="qdiffusion", choices=sorted(METHODS))
    p.add_argument("--wbits", type=int, default=8, choices=[b for b in BITS if b <= 8 or b == 32])
    p.add_argument("--abits", type=int, default=8, choices=[b for b in BITS if b <= 8 or b == 32])
    p.add_argument("--int8", action="store_true", help="store for real int8 kernels (torch.ao x86)")
    p.add_argument("--calibration", default=None, choices=CALIBRATIONS, help="override the method's calibration")
    p.add_argument("--n-calib", type=int, default=256, help="calibration rows (network inputs)")
    p.add_argument("--calib-samples", type=int, default=32, help="full-precision trajectories recorded")
    p.add_argument("--calib-steps", type=int, default=20, help="DDIM steps of the recorded trajectories")
    p.add_argument("--guidance", type=float, default=None, help="CFG of the calibration sampler")
    p.add_argument("--iters", type=int, default=100, help="reconstruction iterations per block (papers: 20000)")
    p.add_argument("--no-split", action="store_true", help="Q-Diffusion without split shortcut quantizers")
    p.add_argument("--name", default=None, help="name of the new zoo entry (default: MODEL-METHOD-wXaY)")
    p.add_argument("--weights-dir", default=None, help="zoo folder to write into (default: the shipped zoo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=_run)
