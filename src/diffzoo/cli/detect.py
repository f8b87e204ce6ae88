"""``diffzoo detect IMAGE... --detector dire|laundering``: a score and a label per image.

* ``dire`` (DIRE, Wang et al. 2023): the zoo detector ``--model`` (default ``dire-digits``: 8x8 grey
  digits against the digits UNet); score = probability that the image is generated.
* ``laundering`` (Mandelli et al. 2024): the two-stage patch detector on 32x32 RGB images (zoo
  ``laundering-stage1`` / ``laundering-stage2``); stage-1 score > 0 = synthetic, then stage-2 score > 0 =
  fully synthetic, otherwise laundered (a real image passed through the autoencoder / img2img).
"""

from __future__ import annotations

import argparse

import torch

from diffzoo.io import format_table, read_image
from diffzoo.zoo.forensics import DEFAULT_DETECTORS, check_detector_images, detector_probs, load_detector, two_stage


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.detector == "dire":
        zm = load_detector(args.model or DEFAULT_DETECTORS["dire"])
        c = zm.config["detector"]["image_shape"][0]
        imgs = [check_detector_images(read_image(p, arg="image", channels=c), zm) for p in args.images]
        probs = detector_probs(zm, torch.cat(imgs))
        rows = [
            {"image": p, "score": float(s), "label": "generated" if s > 0.5 else "real"}
            for p, s in zip(args.images, probs.tolist())
        ]
    else:
        n1, n2 = (args.model.split(",") + [None])[:2] if args.model else DEFAULT_DETECTORS["laundering"]
        s1m, s2m = load_detector(n1), load_detector(n2 or DEFAULT_DETECTORS["laundering"][1])
        imgs = [check_detector_images(read_image(p, arg="image", channels=3), s1m) for p in args.images]
        s1, s2, labels = two_stage(s1m, s2m, torch.cat(imgs))
        rows = [
            {"image": p, "stage1": a, "stage2": b, "label": lab}
            for p, a, b, lab in zip(args.images, s1.tolist(), s2.tolist(), labels)
        ]
    print(format_table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="score images with a forensic detector (DIRE or laundering)")
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG)")
    p.add_argument("--detector", choices=("dire", "laundering"), default="dire")
    p.add_argument(
        "--model", default=None, help="zoo detector name (laundering: 'stage1,stage2'; default: the shipped ones)"
    )
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
