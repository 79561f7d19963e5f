#!/usr/bin/env bash
# Builds, on a machine without a GPU, everything benchmarks/gpu_check.py needs on a GPU machine that has no
# package registry, in one folder of at most 40 MiB (default .gpu/check, ignored by git):
#   models/digits  the demo's exports (FP32, FP16, both INT8 files; `make demo` runs first when missing)
#                  and the demo's labelled images;
#   models/big     a 224x224 imagenette-cnn trained one epoch on scikit-image's photographs, exported to
#                  FP16 and INT8 for GPUs (the weights do not matter for speed);
#   photos         28 640x480 JPEG views of those photographs, a folder each (benchmarks/runtime_bench.py's
#                  write_jpegs; the check makes its 2,000 images from them);
#   decode         nvImageCodec, nvJPEG and CV-CUDA for CPython 3.12 and CUDA 13 (pinned, sha256-checked),
#                  cut down to H100/H200 (sm_90) kernels by benchmarks/gpu_site.py: the three wheels are
#                  157 MB, the packed folder about 29 MiB;
#   manifest.json  the commit, the versions and every file's size and sha256.
# Usage, from the project's root:  bash benchmarks/gpu_prepare.sh [FOLDER] [--sm 90]
# About a minute on 2 cores, once the 157 MB of wheels are downloaded (.gpu/wheels). onnxruntime-gpu comes separately
# (../shared/gpu/prepare-ort-gpu.sh): it is too large to share a call with this folder.
set -euo pipefail
out=.gpu/check; sm=90
while [ $# -gt 0 ]; do
  case "$1" in
    --sm) [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "gpu_prepare.sh: --sm takes a GPU generation, e.g. --sm 90" >&2; exit 2; }
          sm="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "gpu_prepare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
root=$(git rev-parse --show-toplevel); cd "$root"
if [ -e "$out" ] && [ ! -f "$out/manifest.json" ]; then
  echo "gpu_prepare.sh: $out exists and was not made by this script; give a new folder" >&2; exit 2
fi
py=.venv/bin/python
[ -x "$py" ] || { echo "gpu_prepare.sh: no .venv here; run 'make install' first" >&2; exit 2; }
[ -f runs/demo/model.int8.trt.onnx ] || make demo
work=$(mktemp -d); new="$out.partial"; trap 'rm -rf "$work" "$new"' EXIT
rm -rf "$new"; mkdir -p "$new/models/digits" "$new/models/big" "$new/photos" "$new/decode"

echo "gpu_prepare: digits exports from runs/demo"
cp runs/demo/model.onnx runs/demo/model.fp16.onnx runs/demo/model.int8.onnx runs/demo/model.int8.trt.onnx \
   runs/demo/card.json "$new/models/digits/"
cp -r runs/demo/images "$new/models/digits/"

echo "gpu_prepare: photos"
"$py" - "$new/photos" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from runtime_bench import photos, write_jpegs
write_jpegs(photos(), Path(sys.argv[1]), 28)
PY

echo "gpu_prepare: a 224x224 imagenette-cnn (one epoch), exported to FP16/INT8"
mkdir -p "$work/flat"; cp "$new"/photos/*/* "$work/flat/"
.venv/bin/cnn-train --preset imagenette-cnn --data "$new/photos" --out "$work/big" --epochs 1 --img-size 224 \
  --val-split 0.25 > "$work/train.log" 2>&1 || { tail -5 "$work/train.log" >&2; exit 1; }
# unlabelled verification: a one-epoch model on 28 images proves nothing about its card
.venv/bin/cnn-export "$work/big/model.keras" --fp16 --int8 --calib "$new/photos" --verify "$work/flat" \
  > "$work/export.log" 2>&1 || { tail -5 "$work/export.log" >&2; exit 1; }
# FP16 and INT8 only: the FP32 file (4.7 MB) does not fit beside the decode libraries; FP32 is checked on digits
cp "$work"/big/model.fp16.onnx "$work"/big/model.int8.trt.onnx "$work"/big/card.json "$new/models/big/"

echo "gpu_prepare: nvImageCodec, nvJPEG and CV-CUDA for sm_$sm"
cat > "$work/decode.txt" <<'REQ'
nvidia-nvimgcodec-cu13==0.9.0.20 --hash=sha256:b59bbb223d11065abb7da81e27a2015d15db5d5535639cdc5050e4154a00800a
nvidia-nvjpeg==13.3.2.43 --hash=sha256:27f9c4a25a73f1d1ad35c342c8d657c8ff43e23877f338ef15fb2602ac2e5aa8
cvcuda-cu13==0.19.0 --hash=sha256:dd62ea08f13e4bebfd62c02e947fedd6d48705cea6f11d6abc7b8e5f65f101ae
REQ
mkdir -p .gpu/wheels
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --require-hashes -r "$work/decode.txt" \
  -d .gpu/wheels 2> >(grep -v "is ignored: it is neither" >&2)
"$py" benchmarks/gpu_site.py .gpu/wheels/nvidia_nvimgcodec_cu13-0.9.0.20-*.whl .gpu/wheels/nvidia_nvjpeg-13.3.2.43-*.whl \
  .gpu/wheels/cvcuda_cu13-0.19.0-*.whl --sm "$sm" --python 312 --out "$new/decode/site.tar.xz"

"$py" - "$new" "$sm" <<'PY'
import hashlib, json, subprocess, sys
from importlib import metadata
from pathlib import Path
folder, sm = Path(sys.argv[1]), int(sys.argv[2])
files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
         for p in sorted(folder.rglob("*")) if p.is_file()}
total = sum(f["bytes"] for f in files.values())
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
versions = {d: metadata.version(d) for d in ("onnxruntime", "tensorflow-cpu", "tf2onnx", "onnx")}
(folder / "manifest.json").write_text(json.dumps({"commit": commit, "sm": sm, "bytes": total, "versions": versions,
                                                  "files": files}, indent=1))
print(f"gpu_prepare: {len(files)} files, {total / 2**20:.1f} MiB")
if total > 40 * 2**20:
    sys.exit(f"gpu_prepare: {folder} is {total / 2**20:.1f} MiB, over the 40 MiB a call can carry beside the project")
PY
rm -rf "$out"; mv "$new" "$out"
echo "gpu_prepare: ready in $out; on the GPU machine: python3 benchmarks/gpu_check.py $out --ort /tmp/ortsite --json \$OUT/gpu_check.json"
