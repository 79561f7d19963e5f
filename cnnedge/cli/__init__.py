"""Thin command-line front ends; each parses, calls the library, prints.

:func:`run_cli` and :func:`entry` are public: scripts (see examples/) use them to turn cnnedge's errors into
one-line messages and exit codes the way the CLIs do.
"""
from ._run import entry, run_cli

__all__ = ["entry", "run_cli"]
