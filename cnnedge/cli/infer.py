"""`cnn-infer`: not yet available (see the project's issues)."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import CnnEdgeError
from ._run import entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnn-infer", description="Not yet available in this version of cnnedge.")
    parser.parse_args(argv)
    raise CnnEdgeError("cnn-infer is not yet available in this version of cnnedge")


console = entry("cnn-infer", main)
