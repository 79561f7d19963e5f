"""The README stays a short tour and its links into docs/ hold: README.md is at most 250 lines, every relative link
in README.md, benchmarks/README.md and docker/README.md names a file that exists, every link into docs/ an existing
page and heading (GitHub's anchors, which is where these files are read), and docs/ builds with
`mkdocs build --strict` (a broken link, a missing anchor or a page left out of mkdocs.yml's nav fails it).
The build skips, saying so, where mkdocs is not installed (`pip install -e '.[dev]'` brings it)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def prose(path: Path) -> str:
    """The file's text outside fenced code blocks."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose(page), re.M)}


def relative_links(path: Path) -> list[tuple[Path, str]]:
    """(target file, anchor) for every relative link in ``path``'s prose; same-page anchors name ``path``."""
    out = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        file, _, anchor = target.partition("#")
        out.append(((path.parent / file).resolve() if file else path, anchor))
    return out


def test_readme_is_a_short_tour():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("name", ["README.md", "benchmarks/README.md", "docker/README.md"])
def test_links_into_docs_and_the_tree_hold(name):
    path = ROOT / name
    links = relative_links(path)
    docs = ROOT / "docs"
    broken = [f"{t.relative_to(ROOT)}#{a}" for t, a in links if not t.exists()]
    assert not broken, f"{name} links to missing files: {broken}"
    into_docs = [(t, a) for t, a in links if docs in t.parents and t.suffix == ".md"]
    if name == "README.md":
        assert into_docs, "README.md has no link into docs/"
    missing = [f"{t.relative_to(ROOT)}#{a}" for t, a in into_docs if a and a not in anchors(t)]
    assert not missing, f"{name} links to headings docs/ does not have: {missing}"


def test_readme_docker_command_is_the_tested_one():
    """tests/docker/test_docker_image.py runs docs/deploy.md's command; README.md shows the same one."""
    def command(path: Path) -> str:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith("docker run --rm --user"))
        text = lines[i]
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        return " ".join(text.split())
    assert command(ROOT / "README.md") == command(ROOT / "docs" / "deploy.md")


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and all(re.search(rf":\s*{re.escape(p)}\s*$", nav, re.M) for p in pages), pages


def test_docs_build_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra brings it): docs/ not built")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "index.html").is_file()
