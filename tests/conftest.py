"""Models that several test modules use, each trained or exported once per session in a tmp_path_factory folder.

They are shared, so no test writes into them: a test that exports into a run folder, or adds or deletes files in
it, takes a copy (``demo_copy``). At the session's end each shared folder is compared with what its fixture left;
a change fails the last test that used it. Heavy imports happen inside the fixtures, never at collection."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _shared(value: Any, *folders: Path) -> Iterator[Any]:
    """Yield ``value``; afterwards fail if any of ``folders`` changed (a test wrote where it should have copied)."""
    before = {f: _files(f) for f in folders}
    yield value
    changed = [str(f) for f in folders if _files(f) != before[f]]
    assert not changed, f"a test changed the shared fixture folder(s) {changed}: it must work on a copy"


@pytest.fixture(scope="session")
def small_cnn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """model.keras, card.json beside it, of the small 16x16 digits CNN (tests/_small_cnn.py)."""
    from _small_cnn import train_small_cnn

    keras_file = train_small_cnn(tmp_path_factory.mktemp("digits") / "run")
    yield from _shared(keras_file, keras_file.parent)


@pytest.fixture(scope="session")
def small_cnn_export(small_cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """small_cnn exported once with FP16, INT8, TensorRT-RTX engines for sm89 (built without a GPU) and a Triton
    repository: ``report``, ``out`` (the run's sibling folder out/) and ``repo``."""
    from cnnedge.export import export

    out, repo = small_cnn.parent.parent / "out", tmp_path_factory.mktemp("triton") / "repo"
    report = export(small_cnn, out, fp16=True, int8=True, engine=True, gpu="sm89", triton=repo)
    yield from _shared(SimpleNamespace(report=report, out=out, repo=repo), out, repo)


@pytest.fixture(scope="session")
def demo_trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """digits-cnn, the `make demo` network, trained 8 epochs (tests/_demo.py): ``run`` (the run folder, not
    exported) and ``result`` (the trainer's TrainResult)."""
    from _demo import train_demo

    run = tmp_path_factory.mktemp("demo") / "demo"
    result = train_demo(run)
    yield from _shared(SimpleNamespace(run=run, result=result), run)


@pytest.fixture
def demo_copy(demo_trained: SimpleNamespace, tmp_path: Path) -> Path:
    """A copy of demo_trained's run folder in tmp_path, for a test that exports into it or changes it."""
    return Path(shutil.copytree(demo_trained.run, tmp_path / "demo"))


@pytest.fixture(scope="session")
def demo_int8(demo_trained: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """demo_trained exported into a copy of its run folder with --int8 --engine --gpu sm89 --batch 1,4,8 (the
    emulated-CPU check included): ``run``, ``report``, ``result`` and the held-out ``images``, ``labels``,
    ``classes``."""
    from _demo import held_out

    from cnnedge.export import export

    run = Path(shutil.copytree(demo_trained.run, tmp_path_factory.mktemp("demo-int8") / "demo"))
    report = export(run / "model.keras", int8=True, engine=True, gpu="sm89", batch="1,4,8")
    demo = SimpleNamespace(run=run, report=report, result=demo_trained.result, **vars(held_out(demo_trained.result)))
    yield from _shared(demo, run)


@pytest.fixture(scope="session", autouse=True)
def engine_choice_cache(tmp_path_factory):
    """auto's engine-choice cache in a session temp folder, never the user's ~/.cache; and auto's measuring off,
    so that which CPU engine runs a test does not depend on timing on a loaded machine (tests/runtime/backends/test_engine_choice.py
    turns it on). Set in os.environ so that the CLIs the tests start inherit it."""
    saved = {k: os.environ.get(k) for k in ("CNNEDGE_CACHE_DIR", "CNNEDGE_AUTO_MEASURE")}
    os.environ["CNNEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cnnedge-cache"))
    os.environ["CNNEDGE_AUTO_MEASURE"] = "0"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
