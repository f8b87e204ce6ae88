"""``diffzoo watermark embed|detect IMAGE --method dwtDct|dwtDctSvd|rivaGan|blind|learned|wouaf|safe-sd --bits ...``.

``embed`` writes the watermarked image (``--out``); ``detect`` decodes ``--bits``' length (or ``--length``)
and, given the expected message ``--bits``, reports the bit accuracy, the binomial p-value and whether it
is detected at ``--fpr`` (exact binomial threshold). ``learned`` / ``wouaf`` / ``safe-sd`` use the zoo
networks; ``wouaf`` and ``safe-sd`` only detect (their marks are generated: ``diffzoo sample tinysd
--fingerprint BITS`` and ``diffzoo sample safe-sd --prompt "... <wm>"``), and ``safe-sd`` expects the
model's own message when ``--bits`` is not given.
"""

from __future__ import annotations

import argparse

import torch

from diffzoo.io import format_table, read_image, save_image
from diffzoo.provenance import (
    WATERMARKS,
    attribute,
    attribution_threshold,
    binomial_tail,
    binomial_threshold,
    format_bits,
    get_watermark,
    parse_bits,
    read_users,
)
from diffzoo.zoo.provenance import ZOO_WATERMARKS, load_safe_sd, load_zoo_watermark

METHODS = (*WATERMARKS, *ZOO_WATERMARKS)


def _watermark(method: str, model: str | None):
    if method in ZOO_WATERMARKS:
        return load_zoo_watermark(method, model)
    if model is not None:
        raise ValueError(f"model: --method {method} is a library watermark; --model names zoo networks only")
    return get_watermark(method)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    wm = _watermark(args.method, args.model)
    img = read_image(args.image, arg="image", channels=3)
    if args.action == "embed":
        if not args.bits:
            raise ValueError("bits: give the message to embed, e.g. --bits 0110...")
        if not args.out:
            raise ValueError("out: give the output image path, e.g. --out watermarked.png")
        bits = parse_bits(args.bits)[None]
        save_image(wm.embed(img, bits)[0], args.out)
        print(f"embedded {bits.shape[1]} bits with {args.method} into {args.out}")
        return 0
    if not args.bits and args.method == "safe-sd" and not args.length:
        args.bits = format_bits(load_safe_sd(args.model or "safe-sd")[2])
    expected = parse_bits(args.bits)[None] if args.bits else None
    n = expected.shape[1] if expected is not None else args.length
    if not n and args.users:
        n = read_users(args.users)[1].shape[1]
    if not n:
        raise ValueError("bits: give the expected message (--bits) or its length (--length)")
    decoded = wm.decode(img, int(n))
    row = {"image": args.image, "method": args.method, "decoded": format_bits(decoded[0])}
    if expected is not None:
        k = int((decoded == expected).sum())
        row.update(
            matches=f"{k}/{n}",
            p_value=binomial_tail(int(n), k),
            detected=k >= binomial_threshold(int(n), args.fpr),
        )
    if args.users:
        names, fps = read_users(args.users)
        idx, dist = attribute(decoded, fps)
        thr = attribution_threshold(int(n), len(names), args.fpr)
        row["user"] = names[int(idx[0])] if int(dist[0]) <= thr else "none"
        row["hamming"] = f"{int(dist[0])} (match <= {thr})"
    print(format_table([row]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watermark", help="embed or detect an invisible watermark (real libraries, learned, WOUAF)")
    p.add_argument("action", choices=("embed", "detect"))
    p.add_argument("image", help="image file (PNG/JPEG)")
    p.add_argument("--method", choices=METHODS, default="dwtDctSvd")
    p.add_argument("--bits", default=None, help="message as 0/1 string (embed: required; detect: expected message)")
    p.add_argument("--length", type=int, default=None, help="detect: message length when --bits is not given")
    p.add_argument("--fpr", type=float, default=0.01, help="detect: false-positive rate of the binomial test")
    p.add_argument("--out", default=None, help="embed: output image path")
    p.add_argument(
        "--model", default=None, help="zoo name of a learned / wouaf / safe-sd network (default: the method's)"
    )
    p.add_argument("--users", default=None, help="detect: attribute to the nearest user of this 'NAME BITS' registry")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
