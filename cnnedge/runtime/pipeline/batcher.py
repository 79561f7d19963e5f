"""The one batcher: files and frames from every source grouped into batches for the decode stage.

Each source has a feeder thread. A file source hands lists of up to one batch of files; a live
source hands one frame at a time and takes its next (newest) frame only once the batcher has taken
this one, so a slow model never works through a backlog of stale frames; a video file is read at
most two batches ahead. A batch closes when it is full, ``max_wait`` after its first item, or when
every source has ended, so several cameras share one inference call and a slow camera never holds
the others back.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Any

from ..sources import FileSource, LiveSource, Source


class SourceEnded:
    """What a feeder hands the batcher when its source has nothing more."""


SOURCE_ENDED = SourceEnded()


class Arrival:
    """Items from one feeder, with the live source's gate (set once the batcher takes them)."""

    __slots__ = ("items", "taken")

    def __init__(self, items: list[Any], taken: threading.Event | None = None) -> None:
        self.items, self.taken = items, taken


class Batcher:
    """Groups what the feeders hand in (``arrivals``) into batches of at most ``size`` items for
    ``stage.submit``; tells the stage ``end()`` once every source has ended. ``pace`` (live sources): a
    batch starts only once the inference stage has run the one before (it releases ``pace``), as when the
    batcher was the inference loop's first half: no batch of old frames waits behind a slow model."""

    def __init__(self, sources: list[Source], stage: Any, size: int, max_wait_s: float,
                 stop: threading.Event, pace: threading.Semaphore | None = None) -> None:
        self.sources, self.stage, self.size, self.max_wait_s, self.stop = sources, stage, size, max_wait_s, stop
        self.pace = pace
        self.arrivals: "queue.Queue[Any]" = queue.Queue()
        self.active = len(sources)
        self.held: Arrival | None = None  # arrived when the open batch had no room: starts the next one
        self.threads = [threading.Thread(target=self.feed, args=(s,), name=f"feed {s.name}", daemon=True)
                        for s in sources]
        self.threads.append(threading.Thread(target=self.work, name="batch", daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout=timeout)

    # feeders ---------------------------------------------------------------------------
    def feed(self, src: Source) -> None:
        try:
            if isinstance(src, FileSource):
                files = iter(src)
                while not self.stop.is_set():
                    if self.arrivals.qsize() > 2:  # the decode stage is full: read no further ahead
                        time.sleep(0.002)
                        continue
                    items = list(itertools.islice(files, self.size))
                    if items:
                        self.arrivals.put(Arrival(items))
                    if len(items) < self.size:  # the source has ended: say so now, so its last batch need not wait
                        break
            elif isinstance(src, LiveSource):
                self.feed_newest(src)
            else:
                self.feed_video(src)
        finally:
            self.arrivals.put(SOURCE_ENDED)

    def feed_newest(self, src: LiveSource) -> None:
        """At most one frame of a live source waits for the batcher: the next one is taken from the source
        (its newest, older ones counted as dropped) only once the batcher has taken this one."""
        taken = threading.Event()
        taken.set()
        while not self.stop.is_set():
            if not taken.wait(0.1):
                continue
            try:
                frame = src.get(0.1)
            except StopIteration:
                break
            if frame is not None:
                taken.clear()
                self.arrivals.put(Arrival([frame], taken))

    def feed_video(self, src: Source) -> None:
        while not self.stop.is_set():
            if self.arrivals.qsize() > 2 * self.size:  # a video file: don't read ahead of the model
                time.sleep(0.002)
                continue
            frame = next(src, None)
            if frame is None:
                break
            self.arrivals.put(Arrival([frame]))

    # the batcher's thread --------------------------------------------------------------
    def take(self, timeout: float | None) -> Any:
        """The next arrival (its gate set: the source may capture again); None when none came in time."""
        if self.held is not None:
            got, self.held = self.held, None
            return got
        try:
            got = self.arrivals.get(timeout=timeout) if timeout else self.arrivals.get_nowait()
        except queue.Empty:
            return None
        if got is SOURCE_ENDED:
            self.active -= 1
            return None
        if got.taken is not None:
            got.taken.set()
        return got

    def work(self) -> None:
        try:
            while (self.active > 0 or self.held is not None) and not self.stop.is_set():
                if self.pace is not None and not self.pace.acquire(timeout=0.1):
                    continue
                first = self.take(0.1)
                if first is None:
                    if self.pace is not None:
                        self.pace.release()
                    continue
                items = self.fill(list(first.items))
                if not self.stage.submit(items):
                    return
        finally:
            self.stage.end()

    def fill(self, items: list[Any]) -> list[Any]:
        """Add arrivals to an open batch until it is full, its wait is over, or no source can add to it."""
        close_at = time.perf_counter() + self.max_wait_s
        while len(items) < self.size and self.active > 0 and not self.stop.is_set():
            remaining = close_at - time.perf_counter()
            got = self.take(min(remaining, 0.1) if remaining > 0 else None)
            if got is None:
                if remaining > 0.1 or self.arrivals.qsize():
                    continue
                break
            if len(items) + len(got.items) > self.size:
                self.held = got
                break
            items.extend(got.items)
        return items
