"""``diffzoo restore IMAGE --operator NAME``: measure an image with an operator and restore it.

The image is read with Pillow, converted to the prior's channels (grey for digits) and resized to its
resolution (8 x 8 box filter for digits), mapped to ``[-1, 1]``; then ``y = A x + sigma_y n`` is
simulated and ``x`` restored with ``--method`` (``ddnm``, ``dps``, ``pinv``, or ``idm`` with an
``idm-*`` model, whose own CS operator is used). Writes a PNG ``input | A^+ y | restored`` and prints
PSNR and ``||A x_hat - y||``.

The options, the output path and the image are checked before any model is loaded; a file that is
not a complete image is refused with a one-line error naming ``IMAGE``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from diffzoo import zoo
from diffzoo.inverse.operators import OPERATORS, get_operator
from diffzoo.inverse.posterior import measurement_error, pinv_estimate, posterior_sample
from diffzoo.io import check_output_path, image_to_tensor, open_image, save_strip
from diffzoo.metrics import psnr
from diffzoo.zoo.idm import load_idm


def _check_shape(zm: zoo.ZooModel, shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    """The image shape to restore at: the prior's ``sample_shape``, or ``--shape`` if the network runs at it."""
    own = zm.sample_shape
    if len(own) != 3:
        raise ValueError(f"model: zoo model {zm.name!r} draws samples of shape {own}, not images")
    if not shape or tuple(shape) == own:
        return own  # type: ignore[return-value]
    if min(shape) < 1:
        raise ValueError(f"shape: expected positive C H W, got {' '.join(map(str, shape))}")
    if shape[0] != own[0]:
        raise ValueError(f"shape: zoo model {zm.name!r} takes {own[0]}-channel images, got C = {shape[0]}")
    den = zm.denoiser()
    try:  # one network call at the requested size (a UNet needs sizes its down-sampling divides)
        with torch.no_grad():
            den(torch.zeros(1, *shape), torch.full((1,), float(den.schedule.t_max)))
    except RuntimeError:
        raise ValueError(
            f"shape: zoo model {zm.name!r} cannot run at {shape[1]} x {shape[2]} (its own size is {own[1]} x {own[2]})"
        ) from None
    return tuple(shape)  # type: ignore[return-value]


def _main(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {args.threads}")
    out_path = check_output_path(
        args.out or Path(args.image).with_suffix("").as_posix() + f"_{args.method}.png", "out", (".png",)
    )
    img = open_image(args.image, arg="IMAGE")  # before any model is loaded
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    if args.method == "idm":
        chain, op, _ = load_idm(args.model)
        x = image_to_tensor(img, channels=op.in_shape[0], size=op.in_shape[1:])
        y = op.measure(x, args.sigma_y, gen)
        with torch.no_grad():
            out = chain.eval()(y, op)
    else:
        zm = zoo.load(args.model, kinds=("diffusion",))
        shape = _check_shape(zm, tuple(args.shape) if args.shape else None)
        op = get_operator(
            args.operator,
            shape,
            ratio=args.ratio,
            factor=args.factor,
            missing=args.missing,
            sigma=args.blur_sigma,
            seed=args.op_seed,
        )
        x = image_to_tensor(img, channels=shape[0], size=shape[1:])
        y = op.measure(x, args.sigma_y, gen)
        out = posterior_sample(
            args.method,
            zm.denoiser(),
            op,
            y,
            args.steps,
            sigma_y=args.sigma_y,
            eta=args.eta,
            zeta=args.zeta,
            generator=gen,
        )
    save_strip([x, pinv_estimate(op, y), out], out_path)
    print(
        f"{out_path}: PSNR {float(psnr(out.clamp(-1, 1), x)):.2f} dB, "
        f"||Ax-y|| {float(measurement_error(op, out, y)[0]):.3g}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="simulate a measurement of an image and restore it (DDNM, DPS, IDM)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("image", metavar="IMAGE", help="input image file (any Pillow format)")
    p.add_argument("--operator", default="cs", choices=OPERATORS, help="measurement operator")
    p.add_argument("--method", default="ddnm", choices=("ddnm", "dps", "pinv", "prior", "idm"))
    p.add_argument("--model", default="digits-unet", help="prior zoo model (idm: an idm-* model)")
    p.add_argument("--ratio", type=float, default=0.25, help="CS sampling ratio in (0, 1]")
    p.add_argument("--factor", type=int, default=2, help="super-resolution factor")
    p.add_argument("--missing", type=float, default=0.5, help="random inpainting: missing fraction")
    p.add_argument("--blur-sigma", type=float, default=1.0)
    p.add_argument("--op-seed", type=int, default=0)
    p.add_argument("--sigma-y", type=float, default=0.0, help="measurement noise std (>= 0)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=0.85, help="DDNM eta")
    p.add_argument("--zeta", type=float, default=1.5, help="DPS step size")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="C H W (default: the prior's sample_shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="output PNG (default IMAGE_<method>.png)")
    p.set_defaults(func=_main)
