"""Stage, then commit: how every cnnedge writer puts its outputs in place, and how the next one finds what a
killed writer left.

- :class:`StagedFile` (and :func:`staged_path`, :func:`write_text`, :func:`write_bytes`): one file, written
  under a hidden name beside its target, fsynced and renamed into place; nothing a user made is replaced unless
  forced. Used by the result sinks, the trainer's checkpoints and reports, and every file an export writes.
- :class:`StagedFolder`: a set of files built in a hidden folder and put in place all or nothing by a record
  (an export's artifacts, a ``cnn-train --force`` run replacing the one in its folder); :func:`recover` rolls a
  killed commit forward and sweeps the staging folders of dead writers; :func:`pending` tells a reader.

One rule for leftovers (:mod:`.owner`): every hidden file, staging folder and record names its owner (pid,
start time, host); one whose owner is dead is swept or rolled forward, one whose owner lives is left alone.
"""
from __future__ import annotations

from .files import (OutputError, StagedFile, keep_under_free_name, put_in_place, refuse_overwrite, refuse_special,
                    staged_path, sweep_files, write_bytes, write_failure, write_text)
from .folders import Layout, Recovered, StagedFolder, live_staging, pending, recover, roll_forward, sweep
from .owner import Owner, me

__all__ = ["Layout", "OutputError", "Owner", "Recovered", "StagedFile", "StagedFolder", "keep_under_free_name",
           "live_staging", "me", "pending", "put_in_place", "recover", "refuse_overwrite", "refuse_special",
           "roll_forward", "staged_path", "sweep", "sweep_files", "write_bytes", "write_failure", "write_text"]
