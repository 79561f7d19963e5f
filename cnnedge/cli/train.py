"""`cnn-train`: train a classic tutorial CNN on a dataset into a run folder with a model card."""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Sequence

from ..datasets.specs import MAX_SEED
from ..imaging.opencv import MAX_PIXELS
from ..errors import UsageError, argument_names
from ..trainer.config import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_SIDE, MIN_LR
from ._args import Parser, add_model_flags, flag_names, model_description
from ._run import entry

EXAMPLES = """examples:
  cnn-train --preset digits-cnn --data digits --out runs/digits
  cnn-train --preset mnist-cnn --data mnist --out runs/mnist --epochs 10
  cnn-train --preset food101-cnn --data ~/food-101/images --out runs/food --val-split 0.2 --flip --rotation 15
  cnn-train --preset mobilenetv2-transfer --data photos/ --out runs/mnv2 --weights imagenet --img-size 160
  cnn-train --resume runs/food --epochs 30
  cnn-train --list
"""


class _Parser(Parser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see cnn-train --help)")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected H or HxW (e.g. 32 or 224x224), found {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def _shape(text: str) -> tuple[int, ...]:
    parts = re.split(r"[xX,]", text.strip())
    want = f"expected HxW or HxWxC, H and W from 1 to {MAX_SIDE}, C 1 or 3 (e.g. 28x28)"
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{want}, found {text!r}") from None
    if len(shape) not in (2, 3) or not all(1 <= v <= MAX_SIDE for v in shape[:2]) or shape[2:] not in ((), (1,), (3,)):
        raise argparse.ArgumentTypeError(f"{want}, found {text!r}")
    return shape


def build_parser() -> _Parser:
    p = _Parser(prog="cnn-train", description="Train an image-classification CNN (a classic tutorial network) "
                "into a run folder: model.keras, card.json, history.csv, plots and metrics.json.",
                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="name the presets, one line each, and exit")
    p.add_argument("--preset", metavar="NAME", help="network to train, e.g. --preset digits-cnn (see --list)")
    p.add_argument("--data", metavar="SOURCE", default="digits",
                   help="digits (embedded, default), mnist, fashion_mnist, cifar10, cifar100, a folder with one "
                        "sub-folder per class, or a Fashion-MNIST-layout .csv; e.g. --data ~/imagenette/train")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder to create, e.g. --out runs/digits")
    p.add_argument("--epochs", type=int, metavar="N",
                   help=f"maximum epochs, 1 to {MAX_EPOCHS} (default: the preset's), e.g. --epochs 20")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"batch size, 1 to {MAX_BATCH} (default: the preset's), e.g. --batch-size 64")
    p.add_argument("--img-size", type=_size, metavar="H[xW]",
                   help=f"model input size, each side 4 to {MAX_SIDE} (default: the data's own size, else the "
                        "preset's), e.g. --img-size 224x224")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="3 colour channels (default) or 1 for a grayscale model, e.g. --channels 1")
    p.add_argument("--val-split", type=float, metavar="F",
                   help="fraction held out (stratified) for validation, 0 to below 1, with --test-split below 0.9 "
                        "in all, e.g. --val-split 0.2 (default 0.2 for folders and CSV, 0.15 for digits, 0.1 for "
                        "keras datasets)")
    p.add_argument("--test-split", type=float, metavar="F",
                   help="fraction held out as a separate test set, 0 to below 1, with --val-split below 0.9 in all, "
                        "e.g. --test-split 0.1 (folders without test/ measure test accuracy on the validation split "
                        "otherwise)")
    p.add_argument("--csv-shape", type=_shape, metavar="HxW[xC]",
                   help=f"image shape of a CSV's pixel columns when not square gray/colour, H and W 1 to {MAX_SIDE}, "
                        "C 1 or 3, e.g. --csv-shape 28x28")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help=f"seed for the split, shuffling and weights, 0 to {MAX_SEED} (default 0), e.g. --seed 1")
    p.add_argument("--patience", type=int, default=5, metavar="N",
                   help=f"stop after N epochs without a better val_loss, 0 (never) to {MAX_EPOCHS} (default 5), "
                        "e.g. --patience 3")
    p.add_argument("--learning-rate", type=float, metavar="LR",
                   help=f"Adam learning rate, {MIN_LR:g} to below {MAX_LR:g} (default 1e-3), e.g. 3e-4")
    p.add_argument("--weights", metavar="W",
                   help="transfer presets: imagenet (default, downloads once), none, or a path to a weights "
                        "file, e.g. --weights none")
    aug = p.add_argument_group("augmentation (training input pipeline only; never in the saved model)")
    aug.add_argument("--flip", action="store_true", help="random horizontal flips, e.g. --flip")
    aug.add_argument("--rotation", type=float, default=0.0, metavar="DEG",
                     help="random rotation up to +-DEG, 0 to 180, e.g. --rotation 15")
    aug.add_argument("--zoom", type=float, default=0.0, metavar="F",
                     help="random zoom up to +-F, 0 to below 1, e.g. --zoom 0.1")
    aug.add_argument("--shift", type=float, default=0.0, metavar="F",
                     help="random shift up to +-F of height and width, 0 to below 1, e.g. --shift 0.1")
    aug.add_argument("--shear", type=float, default=0.0, metavar="F",
                     help="random shear up to +-F, 0 to below 1, e.g. --shear 0.1")
    add_model_flags(p, ("resize", "crop_pct", "pad_value", "interpolation"),
                    "how images are resized to --img-size (recorded in the card; the runtime does the same)")
    _restate(p, "crop_pct", f"with stretch, center-crop or shorter: resize to input/F, then centre-crop the input, "
             f"as timm's crop_pct; F above 0 and at most 1, and input/F at most {MAX_PIXELS:,} pixels (default 1; "
             "e.g. --crop-pct 0.875 is 256 -> 224)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train in mixed float16 (needs a GPU), e.g. --mixed-precision")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run, e.g. --resume runs/food --epochs 30")
    p.add_argument("--force", action="store_true",
                   help="replace the run in --out once the new one completes (a folder that is not a cnn-train "
                        "run is never written into), e.g. --force")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    return p


def _restate(parser: _Parser, dest: str, text: str) -> None:
    """cnn-train's own help for a shared flag (its bound in training)."""
    next(a for a in parser.flags if a.dest == dest).help = text


# flags that mean something when continuing a run; every other one belongs to the run's own settings
RESUME_FLAGS = ("resume", "epochs", "patience", "quiet", "traceback", "help")


def _given(argv: Sequence[str]) -> list[str]:
    """The option strings of the flags actually given in ``argv`` (abbreviations and --x=v included)."""
    parser = build_parser()
    unset = object()
    actions = [a for a in parser.flags if a.option_strings]
    parser.set_defaults(**{a.dest: unset for a in actions})
    ns = parser.parse_args(argv)
    return [a.option_strings[-1] for a in actions if getattr(ns, a.dest, unset) is not unset]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.list:
        from ..trainer.presets import list_presets

        print("\n".join(list_presets()))
        return 0
    with argument_names(flag_names(build_parser(), run_dir="resume")):
        result = _train(args, argv)
    print(f"cnn-train: {result.summary()}", flush=True)
    return 0


def _train(args: argparse.Namespace, argv: list[str]) -> Any:
    from ..trainer.loop import TrainConfig, resume, train
    from ..trainer.tfdata import Augment

    verbose = 2 if args.quiet else None
    if args.resume:
        extra = [f for f in _given(argv) if f.lstrip("-").replace("-", "_") not in RESUME_FLAGS]
        if extra:
            raise UsageError(f"--resume continues a run with its own settings; {extra[0]} cannot change them: give "
                             "only --resume RUN_DIR (with --epochs N, --patience N, --quiet)")
        return resume(args.resume, epochs=args.epochs, patience=args.patience if "--patience" in _given(argv)
                      else None, verbose=verbose)
    if not args.preset:
        raise UsageError("--preset is required, e.g. --preset digits-cnn (cnn-train --list names them)")
    if not args.out:
        raise UsageError("--out is required, e.g. --out runs/digits")
    cfg = TrainConfig(
        preset=args.preset, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
        img_size=args.img_size, channels=args.channels, val_split=args.val_split, test_split=args.test_split,
        seed=args.seed, patience=args.patience, weights=args.weights,
        augment=Augment(flip=args.flip, rotation=args.rotation, zoom=args.zoom, shift=args.shift, shear=args.shear),
        learning_rate=args.learning_rate, mixed_precision=args.mixed_precision, csv_shape=args.csv_shape,
        force=args.force, verbose=verbose,
        resize=model_description(args, ("resize", "crop_pct", "pad_value", "interpolation")))
    return train(cfg)


console = entry("cnn-train", main)


if __name__ == "__main__":
    console()
