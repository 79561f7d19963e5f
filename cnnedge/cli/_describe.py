"""The flags that describe a model without a card (cnn-infer's), as one group any CLI adds.

``add_description_flags(parser)`` adds them; ``description_values(args)`` returns them as keyword values
named like the library's arguments (``labels``, ``scale``, ``mean``, ``std``, ``rgb``, ``resize``,
``output``, ``input_size``).
"""
from __future__ import annotations

import argparse
import re
from typing import Any

from ._args import number, numbers

NAMES = ("labels", "scale", "mean", "std", "rgb", "resize", "output", "input_size")
FLAGS = {"rgb": "--rgb/--no-rgb", "input_size": "--input-size"}


def input_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x160`` (height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH or a side, e.g. 224x224 or 224, got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def add_description_flags(parser: argparse.ArgumentParser, title: str) -> None:
    from ..card import RESIZE_MODES

    g = parser.add_argument_group(title)
    g.add_argument("--labels", metavar="FILE", help="class names, one a line (e.g. --labels labels.txt)")
    g.add_argument("--scale", type=number, metavar="X", help="pixel scale (e.g. --scale 1/255)")
    g.add_argument("--mean", type=numbers, metavar="M", help="mean, one or per channel (e.g. --mean 0.485,0.456,0.406)")
    g.add_argument("--std", type=numbers, metavar="S", help="std, one or per channel (e.g. --std 0.229,0.224,0.225)")
    g.add_argument("--rgb", action=argparse.BooleanOptionalAction, default=None,
                   help="the model takes RGB (--rgb) or BGR (--no-rgb) colour order (e.g. --no-rgb)")
    g.add_argument("--resize", choices=RESIZE_MODES, help="resize mode (default stretch; e.g. --resize center-crop)")
    g.add_argument("--output", choices=("probabilities", "logits"),
                   help="what the model outputs (default: detected; e.g. --output logits)")
    g.add_argument("--input-size", type=input_size, metavar="HxW",
                   help="input size for a graph whose height and width are dynamic (e.g. --input-size 224x224)")


def description_values(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in NAMES}


def flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))
