"""argparse value types shared by the CLIs: a bad value is argparse's one-line usage error."""
from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction
from typing import Any, Callable, NoReturn

from ..runtime.limits import MAX_SECONDS, max_threads, threads_bound


_SIGNED = re.compile(r"^-[0-9.]")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the mistake and where the help is, not a screen of usage) that
    keeps its options in ``flags``, its groups' included: argparse lists them only privately."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: list[argparse.Action] = []
        self.signed: set[str] = set()  # flags whose value may start with '-' (see parse_known_args)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """argparse takes ``-1/255`` or ``-0.5,0.2`` after a flag for another flag (only plain negative numbers
        pass): a signed flag followed by such a value is read as ``--flag=VALUE``."""
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        joined, i = [], 0
        while i < len(argv):
            if argv[i] == "--":
                joined += argv[i:]
                break
            if argv[i] in self.signed and i + 1 < len(argv) and _SIGNED.match(str(argv[i + 1])):
                joined.append(f"{argv[i]}={argv[i + 1]}")
                i += 2
                continue
            joined.append(argv[i])
            i += 1
        return super().parse_known_args(joined, namespace)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.append(action)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def recorded(*a: Any, **k: Any) -> argparse.Action:
            action = add(*a, **k)
            self.flags.append(action)
            return action

        group.add_argument = recorded  # type: ignore[method-assign]
        return group

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int | None = None, bound: str | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (None: no upper bound). Its ``bound``
    attribute is how ``--help`` and the error name the range (default ``low..high`` or ``>= low``)."""
    said = bound or (f"{low}..{high}" if high is not None else f">= {low}")

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {said}, got {text!r}") from None
        if v < low or high is not None and v > high:
            raise argparse.ArgumentTypeError(f"expected a whole number {said}, got {v}")
        return v

    parse.bound = said  # type: ignore[attr-defined]
    return parse


def float_in(low: float, high: float, what: str = "a number", low_open: bool = True,
             high_open: bool = True, bound: str | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number between ``low`` and ``high`` (open ends by default: NaN and inf are
    never in). Its ``bound`` attribute names the range (default e.g. ``> 0 and < 1e+09``)."""
    said = bound or f"{'>' if low_open else '>='} {low:g} and {'<' if high_open else '<='} {high:g}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {said}, got {text!r}") from None
        inside = (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
        if not (math.isfinite(v) and inside):
            raise argparse.ArgumentTypeError(f"expected {what} {said}, got {text!r}")
        return v

    parse.bound = said  # type: ignore[attr-defined]
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
#: seconds: a duration or a timeout, finite (``inf`` would never end, ``nan`` compares false to everything)
positive_seconds = float_in(0, MAX_SECONDS, "a number of seconds")


def threads_int() -> Callable[[str], int]:
    """``--threads`` and ``--workers``: 1 to :func:`~cnnedge.runtime.limits.max_threads` (4 per core)."""
    return int_in(1, max_threads(), threads_bound())


def bound(kind: Callable[[str], Any]) -> str:
    """The range an argparse type from this module takes, as its ``--help`` names it."""
    return getattr(kind, "bound")


def number(text: str) -> float:
    """A number or a fraction such as ``1/255``."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction such as 1/255, got {text!r}") from None


def fraction(text: str) -> float:
    """A number from 0 to 1, e.g. a top-1 agreement of ``0.995``."""
    v = number(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    v = number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


# the model-description flags: shared by cnn-infer, cnn-bench and cnn-export ---------------------------------

#: flag -> (metavar or None for a switch, help: what it is, when to use it, an example)
_MODEL_FLAGS: dict[str, tuple[str | None, str]] = {
    "labels": ("FILE", "class names, one a line; without it, names come from the file's metadata (Ultralytics "
                       "'names', 'labels', 'classes') or are indices (e.g. --labels labels.txt)"),
    "input_size": ("HxW", "image size for a graph whose height and width are dynamic, e.g. [N,3,?,?]; the "
                          "size the model was trained at, each side 1..16384 (e.g. --input-size 48x192)"),
    "scale": ("X", "multiply pixels (0..255) by X first, X not 0 (default 1/255; e.g. --scale 1/255)"),
    "mean": ("M", "subtract after scaling, one finite value or one per channel (default 0; e.g. --mean "
                  "0.485,0.456,0.406)"),
    "std": ("S", "then divide, one value (not 0) or one per channel (default 1; e.g. --std 0.229,0.224,0.225); "
                 "a negative std inverts: --scale 1/255 --mean 1 --std -1 feeds 1 - x/255 (white digits on black "
                 "become black on white)"),
    "rgb": (None, "feed RGB (default) or BGR with --no-rgb, for models trained on OpenCV's order (e.g. --no-rgb)"),
    "resize": ("MODE", "stretch (default; the tutorials), center-crop (keep aspect, crop to fill), shorter "
                       "(shorter side to input/crop-pct, centre crop: torchvision/timm ImageNet models), "
                       "letterbox (fit, centred on --pad-value), pad (fit, top-left, pad right/bottom: OCR text "
                       "lines, documents) (e.g. --resize shorter)"),
    "crop_pct": ("F", "with stretch, center-crop or shorter: resize to input/F, then centre-crop the input, "
                      "as timm's crop_pct, 0 < F <= 1; 0.875 is 256 -> 224 (default 1; e.g. --crop-pct 0.875)"),
    "pad_value": ("V", "pixel value 0..255 that letterbox and pad fill with; 127.5 after (x/255-0.5)/0.5 is "
                       "PaddleOCR's zero padding (default 0; e.g. --pad-value 127)"),
    "interpolation": ("I", "auto (default: area when shrinking, linear when enlarging), area, linear "
                           "(torchvision/PIL bilinear), cubic (bicubic, timm), lanczos (e.g. --interpolation cubic)"),
    "output": ("KIND", "probabilities or logits (default: detected; a softmax is applied to logits only; "
                       "e.g. --output logits)"),
}
MODEL_FLAGS = tuple(_MODEL_FLAGS)

#: worked examples for `--help` (cnn-infer's epilog)
MODELS_FROM_ELSEWHERE = """\
models from elsewhere (no card; the flags say what the model expects):
  # an ImageNet-style torchvision/timm export: shorter side 256, centre crop 224, bilinear
  cnn-infer resnet18.onnx --source photos/ --resize shorter --crop-pct 0.875 --interpolation linear \\
      --scale 1/255 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --output logits --labels imagenet.txt
  # an OCR-style text-line model of dynamic width: keep aspect, pad right with mid-grey
  cnn-infer ch_ppocr_mobile_v2.0_cls_infer.onnx --source lines/ --input-size 48x192 --resize pad \\
      --pad-value 127.5 --interpolation linear --scale 1/255 --mean 0.5 --std 0.5 --no-rgb --labels 0_180.txt
  # a model with class names in its metadata (an Ultralytics classify export): names and size are read
  cnn-infer yolo11n-cls.onnx --source photos/ --resize shorter --interpolation linear --scale 1/255
"""


def add_model_flags(parser: argparse.ArgumentParser, which: tuple[str, ...] = MODEL_FLAGS,
                    title: str = "models without a card (third-party ONNX, or a .keras without its card.json)"
                    ) -> Any:
    """Add the model-description flags named in ``which`` as one group. Values stay text here:
    :func:`model_description` checks them all in one place, as the Python API does."""
    from ..artifact.card import INTERPOLATIONS, OUTPUT_KINDS, RESIZE_MODES

    g = parser.add_argument_group(title)
    choices = {"resize": RESIZE_MODES, "interpolation": INTERPOLATIONS, "output": OUTPUT_KINDS}
    for key in which:
        metavar, help_text = _MODEL_FLAGS[key]
        flag = "--" + key.replace("_", "-")
        if metavar is None:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif key in choices:
            g.add_argument(flag, choices=choices[key], help=help_text)
        else:
            g.add_argument(flag, metavar=metavar, help=help_text)
            if key in ("scale", "mean", "std") and isinstance(parser, Parser):
                parser.signed.add(flag)
    return g


def model_description(args: argparse.Namespace, which: tuple[str, ...] = MODEL_FLAGS) -> dict[str, Any]:
    """The given model-description flags, checked and typed (keyword arguments for Classifier:
    ``input_size`` as (h, w), ``mean`` as a tuple ...); a bad value is a UsageError (exit 2)
    that names the flag and shows its form, e.g. ``--std: must not contain 0 (...), e.g. --std 0.229,0.224,0.225``."""
    from ..runtime.describe import check_description

    return check_description({k: getattr(args, k, None) for k in which}, cli=True)


def add_load_timeout(group: "argparse._ArgumentGroup | argparse.ArgumentParser") -> None:
    """``--load-timeout-s``: how long a model's first run may take (cnn-infer, cnn-bench)."""
    from ..runtime.interrupt import DEFAULT_LOAD_TIMEOUT_S

    group.add_argument("--load-timeout-s", type=positive_seconds, default=DEFAULT_LOAD_TIMEOUT_S, metavar="S",
                       help="refuse a model whose first run takes longer than S seconds: one that never finishes; "
                            f"S {bound(positive_seconds)} (default {DEFAULT_LOAD_TIMEOUT_S:g}; e.g. --load-timeout-s "
                            "300 for a slow machine)")


def flag_names(parser: Parser, **aliases: str | tuple[str, ...]) -> dict[str, str]:
    """How a command's errors name the library's arguments, read off its parser (for
    :func:`cnnedge.errors.argument_names`): an option's ``dest`` is the library's keyword, named by the option's
    first long flag (both forms of an on/off pair: ``--rgb/--no-rgb``). ``aliases`` name a keyword that no option
    has as its ``dest`` by the ``dest`` (or several) of the options that set it: ``run_dir="resume"``."""
    names = {}
    for action in parser.flags:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs:
            names[action.dest] = "/".join(longs) if isinstance(action, argparse.BooleanOptionalAction) else longs[0]
    for keyword, dests in aliases.items():
        names[keyword] = "/".join(names[d] for d in ((dests,) if isinstance(dests, str) else dests))
    return names
