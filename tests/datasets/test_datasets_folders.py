"""The one folder walker (cnnedge.datasets.folders): sorted, hidden names left out, only image names read,
and links to folders, link loops, broken links and FIFOs reported instead of followed or read."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnedge.datasets import Entry, image_files, labelled_entries, walk
from cnnedge.datasets.folders import NOT_IMAGE, class_files


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_walk_is_sorted_depth_first_and_leaves_hidden_names_out(tmp_path: Path) -> None:
    for rel in ("b.png", "a/2.jpg", "a/1.JPG", "a.b/x.png", ".hidden.png", ".cache/y.png", "a/.z.png"):
        _touch(tmp_path / rel)
    _touch(tmp_path / "notes.txt")
    found = [(str(e.path.relative_to(tmp_path)), e.skip) for e in walk(tmp_path)]
    assert found == [("a/1.JPG", None), ("a/2.jpg", None), ("a.b/x.png", None), ("b.png", None),
                     ("notes.txt", NOT_IMAGE)]
    assert found == [(str(p.relative_to(tmp_path)), None) for p in sorted(tmp_path.rglob("*"))
                     if p.is_file() and not any(s.startswith(".") for s in p.relative_to(tmp_path).parts)
                     and p.suffix != ".txt"] + [("notes.txt", NOT_IMAGE)]
    assert image_files(tmp_path) == [tmp_path / "b.png"]  # not recursive unless asked


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX links and FIFOs")
def test_walk_reports_links_and_fifos_instead_of_following_or_reading(tmp_path: Path) -> None:
    _touch(tmp_path / "real" / "a.png")
    (tmp_path / "link_dir").symlink_to(tmp_path / "real")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "good.png").symlink_to(tmp_path / "real" / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    got = {e.path.name: e.skip for e in walk(tmp_path)}
    assert got["a.png"] is None and got["good.png"] is None
    assert "not followed" in got["link_dir"]
    assert got["loop.png"].startswith("link loop") and got["broken.png"].startswith("broken link")
    assert got["pipe.png"].startswith("not a regular file")
    assert sorted(got) == ["a.png", "broken.png", "good.png", "link_dir", "loop.png", "pipe.png"]


def test_class_files_and_labelled_entries(tmp_path: Path) -> None:
    for rel in ("cat/1.png", "cat/sub/2.png", "dog/3.png", "top.png", "other/4.png"):
        _touch(tmp_path / rel)
    files, labels = class_files(tmp_path, ["cat", "dog", "missing"])
    assert [f.name for f in files] == ["1.png", "3.png"] and labels.tolist() == [0, 1]
    got = [(e.path.name, label) for e, label in labelled_entries(tmp_path, ["cat", "dog"])]
    assert got == [("1.png", 0), ("2.png", None), ("3.png", 1), ("4.png", None), ("top.png", None)]
    assert isinstance(next(walk(tmp_path)), Entry)


def test_an_unlistable_folder_is_reported(tmp_path: Path) -> None:
    assert [e.skip.startswith("cannot list folder") for e in walk(tmp_path / "gone")] == [True]
