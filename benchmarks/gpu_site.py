"""The GPU-decode wheels (nvImageCodec, nvJPEG, CV-CUDA) cut down to one packed site folder for one GPU generation.

The lent GPU machine has no package registry and takes files in calls of at most 64 MiB; CV-CUDA's wheel alone
is 128 MB, nearly all of it GPU code for ten generations. This keeps what one machine loads: the extension
modules of one Python, the image-format plug-ins the GPU decoder uses (JPEG), and in every CUDA library only the
kernels (cubins) built for the named generation, as ``nvprune -arch sm_90`` would. The libraries keep their
layout byte for byte outside the fat binaries; each fat binary keeps its own entries for that generation
unchanged, the rest of its space is zeroed (which xz packs to nothing), and a fat binary without kernels for
it is refused rather than cut. Used by gpu_prepare.sh:

    python benchmarks/gpu_site.py WHEEL... --sm 90 --python 312 --out .gpu/check/decode/site.tar.xz
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import lzma
import re
import struct
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
CUBIN = 2  # an entry's kind: 1 is PTX, 2 an ELF cubin
# nvImageCodec plug-ins for formats the GPU decoder is never given (it gets JPEG files only; the rest goes
# through OpenCV on the host): TIFF, JPEG 2000 and OpenCV's own codecs.
UNUSED = ("nvidia/nvimgcodec/extensions/libopencv_ext.so*", "nvidia/nvimgcodec/extensions/lib*tiff_ext.so*",
          "nvidia/nvimgcodec/extensions/libnvjpeg2k_ext.so*", "nvidia/nvimgcodec/tools/*")


class TrimError(ValueError):
    """A library or wheel that cannot be cut down as asked (not ELF64, no kernels for the generation)."""


@dataclass
class Pruned:
    """What pruning one library did: fat binaries seen, cubin bytes kept and dropped."""

    binaries: int = 0
    kept: int = 0
    dropped: int = 0


def sections(data: bytes | bytearray) -> dict[str, tuple[int, int]]:
    """An ELF64 little-endian file's sections: name -> (file offset, size)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise TrimError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * entsize) for i in range(count)]
    table = headers[names][4]
    out = {}
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", table + name)
        out[bytes(data[table + name:end]).decode()] = (offset, size)
    return out


def entries(data: bytes | bytearray, start: int, size: int) -> list[tuple[int, int, int, int]]:
    """The entries of one fat binary's payload: (offset, total length, kind, sm) each."""
    out, pos = [], start
    while pos < start + size:
        kind, _version, header, payload = struct.unpack_from("<HHIQ", data, pos)
        sm, = struct.unpack_from("<I", data, pos + 28)
        if header < 32 or pos + header + payload > start + size:
            raise TrimError(f"fat binary entry at {pos:#x} runs past its binary")
        out.append((pos, header + payload, kind, sm))
        pos += header + payload
    return out


def binaries(data: bytes | bytearray) -> list[tuple[int, int, int]]:
    """The fat binaries of the ``.nv_fatbin`` section: (offset, header size, payload size) each."""
    where = sections(data).get(".nv_fatbin")
    out: list[tuple[int, int, int]] = []
    if where is None:
        return out
    pos, end = where[0], where[0] + where[1]
    while pos + 16 <= end:
        magic, _version, header, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # binaries are 8-byte aligned; the gaps between them are padding
            continue
        out.append((pos, header, size))
        pos += header + size
    return out


def prune(data: bytearray, sm: int) -> Pruned:
    """Keep only the sm_``sm`` cubins in every fat binary, in place; nothing is cut when one binary lacks them."""
    plan = []
    for pos, header, size in binaries(data):
        found = entries(data, pos + header, size)
        keep = [(o, n) for o, n, kind, arch in found if kind == CUBIN and arch == sm]
        if not keep:
            have = sorted({f"sm_{arch}" + ("" if kind == CUBIN else " PTX") for _, _, kind, arch in found})
            raise TrimError(f"a fat binary at {pos:#x} has no sm_{sm} kernels (it has {', '.join(have)})")
        plan.append((pos, pos + header, size, b"".join(bytes(data[o:o + n]) for o, n in keep)))
    done = Pruned()
    for pos, start, size, new in plan:
        data[start:start + size] = new + bytes(size - len(new))
        struct.pack_into("<Q", data, pos + 8, len(new))
        done.binaries += 1
        done.kept += len(new)
        done.dropped += size - len(new)
    return done


def unpack(wheels: list[Path], into: Path, python: str) -> list[str]:
    """Unzip the wheels as pip would install them with --target, without other Pythons' modules and
    unused plug-ins; return what was left out."""
    other = re.compile(r"\.cpython-3\d+t?-")
    left = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                name = info.filename
                if ((other.search(name) and f".cpython-{python}-" not in name)
                        or any(fnmatch.fnmatch(name, g) for g in UNUSED)):
                    left.append(name)
                    continue
                z.extract(info, into)
                if info.external_attr >> 16 & 0o111:
                    (into / name).chmod(0o755)
    return left


def trim(wheels: list[Path], out: Path, sm: int, python: str) -> dict:
    """The wheels as one ``.tar.xz`` site folder for sm_``sm`` and CPython ``python``; returns what was done
    (also stored in the archive as ``cnnedge-trim.json``)."""
    report: dict = {"sm": sm, "python": python, "wheels": [w.name for w in wheels], "pruned": {}}
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        report["left_out"] = unpack(wheels, site, python)
        for lib in sorted(p for p in site.rglob("*.so*") if p.is_file()):
            data = bytearray(lib.read_bytes())
            if not data.startswith(b"\x7fELF"):  # a linker script or stub named .so: no kernels in it
                continue
            try:
                done = prune(data, sm)
            except TrimError as exc:
                raise TrimError(f"{lib.relative_to(site)}: {exc}") from None
            if done.binaries:
                lib.write_bytes(data)
                report["pruned"][str(lib.relative_to(site))] = vars(done)
        (site / "cnnedge-trim.json").write_text(json.dumps(report, indent=1))
        part = out.with_name(out.name + ".partial")
        with lzma.open(part, "wb", preset=6) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        part.replace(out)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="+", type=Path, help="the wheels (e.g. nvidia_nvimgcodec_cu13-*.whl)")
    ap.add_argument("--sm", type=int, default=90, help="GPU generation kept (default 90: H100/H200)")
    ap.add_argument("--python", default="312", help="CPython whose modules are kept (default 312)")
    ap.add_argument("--out", type=Path, required=True, help="the .tar.xz to write")
    args = ap.parse_args(argv)
    try:
        report = trim(args.wheels, args.out, args.sm, args.python)
    except (TrimError, OSError, zipfile.BadZipFile) as exc:
        print(f"gpu_site: {exc}", file=sys.stderr)
        return 1
    kept = sum(p["kept"] for p in report["pruned"].values())
    dropped = sum(p["dropped"] for p in report["pruned"].values())
    print(f"gpu_site: {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB): kept {kept / 1e6:.1f} MB of "
          f"sm_{args.sm} kernels, dropped {dropped / 1e6:.1f} MB for other GPUs and "
          f"{len(report['left_out'])} files for other Pythons and formats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
