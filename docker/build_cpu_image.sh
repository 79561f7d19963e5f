#!/usr/bin/env bash
# Builds docker/Dockerfile.cpu, unchanged, with podman on a Debian machine that cannot pull base images
# (tests/docker/test_docker_image.py runs it; it works by hand too). Needs root and Debian's podman, buildah, runc and
# debootstrap (`make tools-for-tests` installs them); it installs nothing itself.
#   1. A stand-in for the Dockerfile's base image (its FROM name, e.g. python:3.11.14-slim-bookworm):
#      `debootstrap --variant=minbase bookworm` with python3, pip and venv, apt caches and docs removed, and
#      Debian's EXTERNALLY-MANAGED marker dropped (the real image's Python is not Debian's, pip installs into
#      it), imported under that name. Built once per state folder, again when this script changes.
#   2. `podman build` of the Dockerfile, the machine's CA bundle mounted read-only for pip (used by the build
#      steps only: nothing of it is committed into the image). The image: localhost/cnnedge:cpu; with
#      EXTRAS=cpu,openvino in the environment (the Dockerfile's build argument), localhost/cnnedge:cpu-openvino.
# Everything podman keeps (storage, containers.conf, storage.conf) lives in the state folder (default
# tests/.podman, ignored by git), nothing in the machine's own podman store. Use the image by hand with:
#   set -a; . tests/.podman/env; set +a; podman run --rm localhost/cnnedge:cpu --help
# Usage, from anywhere in the checkout:  bash docker/build_cpu_image.sh [STATE_FOLDER]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"
state=$(realpath -m "${1:-tests/.podman}")
extras=${EXTRAS:-cpu}
case "$extras" in
  cpu) image=localhost/cnnedge:cpu ;;
  cpu,openvino) image=localhost/cnnedge:cpu-openvino ;;
  *) echo "build_cpu_image.sh: EXTRAS=$extras: use cpu (the default) or cpu,openvino" >&2; exit 2 ;;
esac
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "build_cpu_image.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (podman here runs rootful)"; exit 3; }
for tool in podman runc; do
  command -v "$tool" >/dev/null || { say "$tool is not installed (make tools-for-tests)"; exit 3; }
done

# Podman settings this kind of machine needs: root lacks CAP_SYS_RESOURCE, so the default ulimits cannot be
# raised; crun 1.8 refuses the hybrid cgroups, runc takes them.
mkdir -p "$state"
cat > "$state/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
cat > "$state/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$state/storage"
runroot = "$state/run"
EOF
printf 'CONTAINERS_CONF=%s\nCONTAINERS_STORAGE_CONF=%s\n' "$state/containers.conf" "$state/storage.conf" > "$state/env"
export CONTAINERS_CONF="$state/containers.conf" CONTAINERS_STORAGE_CONF="$state/storage.conf"

base=$(awk 'toupper($1) == "FROM" { print $2; exit }' docker/Dockerfile.cpu)
case "$base" in */*) ;; *) base="docker.io/library/$base" ;; esac
recipe=$(sha256sum "$0" | cut -c1-16)
have=$(podman image inspect --format '{{index .Labels "org.cnnedge.stand-in"}}' "$base" 2>/dev/null || true)
if [ "$have" != "$recipe" ]; then
  command -v debootstrap >/dev/null || { say "debootstrap is not installed (make tools-for-tests)"; exit 3; }
  say "building the stand-in for $base (debootstrap bookworm, about a minute)"
  rootfs="$state/rootfs"
  rm -rf "$rootfs" "$state/base.tar"
  t0=$SECONDS
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv bookworm "$rootfs" "$mirror" \
    > "$state/debootstrap.log" 2>&1 || { say "debootstrap failed, see $state/debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/locale \
    "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  tar -C "$rootfs" --numeric-owner -cf "$state/base.tar" .
  rm -rf "$rootfs"
  podman rmi --force "$base" >/dev/null 2>&1 || true
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    --change "LABEL org.cnnedge.stand-in=$recipe" "$state/base.tar" "$base" >/dev/null
  rm -f "$state/base.tar"
  say "stand-in $base ready in $((SECONDS - t0)) s"
fi

t0=$SECONDS
podman build --pull=never --layers --build-arg "EXTRAS=$extras" \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -f docker/Dockerfile.cpu -t "$image" . >&2
podman image prune --force >/dev/null  # the layers of earlier builds of this tag
size=$(podman image inspect --format '{{.Size}}' "$image")
say "$image built in $((SECONDS - t0)) s: $((size / 1000000)) MB (podman's size, base included)"
echo "$image"
