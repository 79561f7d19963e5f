"""The CPU image, built and run for real: docker/Dockerfile.cpu built unchanged by podman, docs/deploy.md's `docker run`
command run on the demo's model and held-out digits, every answer compared with the venv's cnn-infer.

docker/build_cpu_image.sh builds the image on a stand-in base (this network cannot pull base images). Where
podman cannot run (not root, podman, runc or debootstrap missing: `make tools-for-tests` installs them as root
with apt-get) every test here skips with the reason. Containers run with `--network none`: the image needs no
network to classify.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from _demo import write_images

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "build_cpu_image.sh"
STATE = ROOT / "tests" / ".podman"
CONSTRAINTS = ROOT / "docker" / "constraints-cpu.txt"
USER = "12345:12345"  # what "$(id -u):$(id -g)" gives an ordinary user: no account in the image


def why_podman_cannot_run() -> str | None:
    if not sys.platform.startswith("linux"):
        return "podman images are built on Linux only"
    if os.geteuid() != 0:
        return "podman runs rootful on this kind of machine: run the tests as root"
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (`make tools-for-tests` installs them as root with apt-get)"
    return None


def build(extras: str) -> SimpleNamespace:
    """docker/build_cpu_image.sh with ``EXTRAS``: the image's name, its size line and the environment that points
    podman at its private store."""
    reason = why_podman_cannot_run()
    if reason:
        pytest.skip(reason)
    res = subprocess.run(["bash", str(SCRIPT), str(STATE)], capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "EXTRAS": extras})
    assert res.returncode == 0, res.stderr[-4000:]
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in (STATE / "env").read_text().splitlines())
    return SimpleNamespace(name=res.stdout.split()[-1], env=env,
                           size=next(ln for ln in res.stderr.splitlines() if " built in " in ln))


@pytest.fixture(scope="module")
def image():
    return build("cpu")


@pytest.fixture(scope="module")
def openvino_image(image):
    """The variant with OpenVINO (EXTRAS=cpu,openvino), built after the default image so that it reuses its base."""
    return build("cpu,openvino")


def pins(section: str = "cpu") -> set[str]:
    """docker/constraints-cpu.txt's pins for cnnedge[cpu] (``"cpu"``), or those the OpenVINO variant adds."""
    lines = [ln.strip() for ln in CONSTRAINTS.read_text().splitlines() if ln.strip()]
    cut = next(i for i, ln in enumerate(lines) if ln.startswith("# --build-arg EXTRAS=cpu,openvino"))
    part = lines[:cut] if section == "cpu" else lines[cut:]
    return {ln.lower() for ln in part if not ln.startswith("#")}


def added_packages(image) -> set[str]:
    """What the image's pip step added to its base, as name==version."""
    listing = ("import importlib.metadata as m; "
               "print('\\n'.join(sorted(f'{d.name}=={d.version}' for d in m.distributions())))")
    res = podman(image, "--entrypoint", "python3", image.name, "-c", listing)
    base_from = (ROOT / "docker" / "Dockerfile.cpu").read_text().split("FROM ", 1)[1].split()[0]
    res_base = podman(image, "--entrypoint", "python3", base_from, "-c", listing)
    assert res.returncode == 0 and res_base.returncode == 0, res.stderr + res_base.stderr
    return {a.lower().replace("_", "-") for a in set(res.stdout.split()) - set(res_base.stdout.split())}


def podman(image, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``podman run --rm --network none ARGS``: the container is removed even when the client is killed."""
    name = f"cnnedge-test-{uuid.uuid4().hex[:12]}"
    argv = ["podman", "run", "--rm", "--pull", "never", "--network", "none", "--name", name, *args]
    try:
        return subprocess.run(argv, env=image.env, capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", name], env=image.env, capture_output=True)


@pytest.fixture(scope="module")
def demo(demo_int8, tmp_path_factory):
    """The demo's INT8 model and its held-out digits as class folders of PNGs (runs/demo/images)."""
    base = tmp_path_factory.mktemp("image")
    count = write_images(demo_int8, base / "photos")
    return SimpleNamespace(run=demo_int8.run, photos=base / "photos", count=count)


def readme_command(start: str) -> list[str]:
    """docs/deploy.md's shell command beginning with ``start``, its continuation lines joined, as words (README.md
    shows the same command; tests/test_docs.py keeps the two equal)."""
    lines = (ROOT / "docs" / "deploy.md").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    text = lines[i]
    while text.endswith("\\"):
        i += 1
        text = text[:-1] + " " + lines[i].strip()
    return shlex.split(text)


def answers(jsonl: str, prefix: str) -> dict[str, tuple[str, float]]:
    """path below ``prefix`` -> (label, score), from cnn-infer's --json rows; a row with an error fails."""
    out = {}
    for line in jsonl.splitlines():
        row = json.loads(line)
        assert "error" not in row, row
        assert row["path"].startswith(prefix + "/"), row["path"]
        out[row["path"][len(prefix) + 1:]] = (row["label"], row["score"])
    return out


def venv_answers(demo, tmp_path, backend: str = "ort-cpu") -> dict[str, tuple[str, float]]:
    ref = tmp_path / f"venv-{backend}.jsonl"
    cli = Path(sys.executable).with_name("cnn-infer")
    res = subprocess.run([str(cli), str(demo.run / "model.int8.onnx"), "--source", str(demo.photos),
                          "--backend", backend, "--json", str(ref), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return answers(ref.read_text(), str(demo.photos))


def assert_same(got: dict, want: dict, count: int) -> None:
    assert len(want) == count and got.keys() == want.keys()
    differ = sorted(p for p in want if got[p][0] != want[p][0])
    assert not differ, f"{len(differ)} labels differ from the venv's, e.g. {differ[:5]}"
    worst = max(abs(got[p][1] - want[p][1]) for p in want)
    assert worst <= 1e-5, f"scores differ from the venv's by up to {worst}"
    right = sum(label == p.split("/")[0] for p, (label, _) in got.items())
    assert right >= 0.9 * count, f"only {right}/{count} right: the model did not classify"


def test_image_holds_the_pinned_packages_only_and_runs_as_user_10001(image):
    user = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", image.name],
                          env=image.env, capture_output=True, text=True, check=True).stdout.strip()
    assert user == "10001"
    res = podman(image, "--entrypoint", "id", image.name, "-u")
    assert res.returncode == 0 and res.stdout.strip() == "10001", res.stderr
    helped = podman(image, image.name)  # CMD: --help
    assert helped.returncode == 0 and helped.stdout.startswith("usage: cnn-infer"), helped.stderr
    # what the image's pip step added to its base: cnnedge and exactly the pinned versions
    added = added_packages(image)
    assert added == pins("cpu") | {"cnnedge==0.1.0"}, added


def test_readme_run_command_matches_the_venv_and_writes_as_the_callers_user(image, demo, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(demo.run, models)
    uid, gid = map(int, USER.split(":"))
    for p in [models, *models.rglob("*")]:
        os.chown(p, uid, gid)
    argv = readme_command("docker run --rm --user")
    subst = {"$(id -u):$(id -g)": USER, "$PWD/runs/digits": str(models), "$PWD/photos": str(demo.photos)}
    for i, word in enumerate(argv):
        for old, new in subst.items():
            word = word.replace(old, new)
        argv[i] = image.name if word == "cnnedge:cpu" else word
    assert argv[:3] == ["docker", "run", "--rm"] and image.name in argv, argv
    res = podman(image, *argv[3:])
    assert res.returncode == 0, res.stderr
    preds = models / "preds.jsonl"
    assert preds.stat().st_uid == uid, "the --user form writes as the caller's user"
    assert_same(answers(preds.read_text(), "/photos"), venv_answers(demo, tmp_path), demo.count)


def test_default_user_reads_read_only_mounts_and_matches_the_venv(image, demo, tmp_path):
    res = podman(image, "-v", f"{demo.run}:/models:ro", "-v", f"{demo.photos}:/photos:ro", image.name,
                 "model.int8.onnx", "--source", "/photos", "--json", "-", "--quiet")
    assert res.returncode == 0, res.stderr
    assert_same(answers(res.stdout, "/photos"), venv_answers(demo, tmp_path), demo.count)


def test_the_openvino_variant_adds_only_openvino_and_runs_the_int8_file_as_the_venv_does(openvino_image, image,
                                                                                         demo, tmp_path):
    """EXTRAS=cpu,openvino: the default image's pins plus OpenVINO's, and `--backend openvino` on the demo's INT8
    file from read-only mounts gives the venv's OpenVINO answers."""
    added = added_packages(openvino_image)
    assert added == pins("cpu") | pins("openvino") | {"cnnedge==0.1.0"}, added
    print(image.size, openvino_image.size, sep="\n")  # the size cost, shown with -s; docker/README.md has it
    res = podman(openvino_image, "-v", f"{demo.run}:/models:ro", "-v", f"{demo.photos}:/photos:ro",
                 openvino_image.name, "model.int8.onnx", "--backend", "openvino", "--source", "/photos", "--json",
                 "-", "--quiet")
    assert res.returncode == 0, res.stderr
    assert_same(answers(res.stdout, "/photos"), venv_answers(demo, tmp_path, "openvino"), demo.count)
