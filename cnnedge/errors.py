"""Exceptions that mean "the user asked for something that cannot be done".

The CLIs turn a :class:`CnnEdgeError` into a one-line message and an exit code;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum
from typing import Callable, Iterator, Mapping


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # the output's reader went away (`| head -1`): a shell's status after SIGPIPE, 128 + 13


class CnnEdgeError(Exception):
    """A user-facing failure: the message says what was expected, found, and what to do."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(CnnEdgeError):
    """A bad flag, path or value given by the user."""

    exit_code = ExitCode.USAGE


class CardError(CnnEdgeError):
    """A model card that is missing, malformed or of an unknown version."""


class DataError(UsageError):
    """A dataset or image source that cannot be used as given."""


class ModelLoadError(CnnEdgeError):
    """A model file that cannot (or must not) be loaded."""


class UnsupportedModelFile(ModelLoadError):
    """A model file of a kind the tool does not take (its suffix, or a Keras 2 HDF5 file): the user gave the wrong
    file, so a usage mistake (exit 2), unlike a file of a taken kind that fails to load or convert (exit 1)."""

    exit_code = ExitCode.USAGE


class MissingDependency(CnnEdgeError):
    """An optional package needed for this feature is not installed."""


class ExportError(CnnEdgeError):
    """A conversion or a parity check failed."""


class BackendUnavailable(CnnEdgeError):
    """The requested inference backend cannot run on this machine."""


class DescriptionNeeded(UsageError):
    """A model without a card whose pixel arithmetic nobody described: cnn-infer refuses to guess it."""


class OptionError(UsageError):
    """A bad value for a library call's argument. ``option`` is the argument's name; ``detail`` may name other
    arguments as ``{name}``. Each is named by :func:`arg_name`: the Python name, or a CLI's flag inside its
    :func:`argument_names`."""

    def __init__(self, option: str, detail: str):
        self.option, self.detail = option, detail
        super().__init__(self.render(arg_name))

    def render(self, name_of: "Callable[[str], str]") -> str:
        import re

        text = re.sub(r"\{([a-z_]+)\}", lambda m: name_of(m.group(1)), self.detail)
        if not self.option:  # a message about several arguments
            return text
        return f"{name_of(self.option)}{'' if text.startswith(':') else ' '}{text}"


class FileExistsRefused(UsageError):
    """Writing would overwrite something the user made, and --force was not given."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters (its type
    name when the message is empty): what a one-line error can quote of a library's failure."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_NAMES: ContextVar[Mapping[str, str]] = ContextVar("cnnedge_argument_names", default={})


def arg_name(name: str) -> str:
    """How a library error names argument ``name``: as the Python caller wrote it, or as the flag
    of the command line that called the library inside :func:`argument_names`."""
    return _NAMES.get().get(name, name)


@contextmanager
def argument_names(names: Mapping[str, str]) -> Iterator[None]:
    """Inside this block, library errors name argument ``a`` as ``names[a]`` (a CLI maps them to its flags);
    an empty mapping restores the Python names."""
    token = _NAMES.set(names)
    try:
        yield
    finally:
        _NAMES.reset(token)
