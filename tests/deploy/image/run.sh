#!/usr/bin/env bash
# `make test-image` / `make test-image-gpu`: build a serving image with the Makefile's own target,
# then run the container tests against it.
#
#   tests/deploy/image/run.sh cpu|gpu        (PYTHON: the interpreter with pytest; MAKE: make)
#
# Everything this host needs and the Dockerfile must not know about lives here:
# - the engine: docker when its daemon answers, else podman (installed from apt when missing,
#   as root; IMAGE_ENGINE=podman picks it over docker), with chroot isolation, the docker image
#   format (the OCI format drops HEALTHCHECK), and runc with explicit ulimits (some sandboxes
#   refuse crun's cgroups and raising RLIMIT_NOFILE); catatonit too, which podman's pods (the
#   CPU image's `podman kube play` test) need for their infra container and Debian only recommends;
# - the base: python:3.11-slim-bookworm when present or pullable, else a stand-in built from
#   Debian's own packages (standin-base.sh). The output says which.
set -euo pipefail

flavor=${1:?usage: $0 cpu|gpu}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
python=${PYTHON:-python3}
image=vit-service:$flavor
started=$SECONDS
say() { echo "test-image-$flavor: $*"; }

pick_engine() {
    if [[ ${IMAGE_ENGINE:-} != podman ]] && command -v docker >/dev/null &&
        docker info >/dev/null 2>&1; then
        engine=docker
        return
    fi
    if ! command -v podman >/dev/null || ! command -v buildah >/dev/null || ! {
        command -v catatonit >/dev/null || [[ -x /usr/libexec/podman/catatonit ]]
    }; then
        if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
            say "no docker daemon and no podman: install one of them (podman: as root, from apt)"
            exit 2
        fi
        say "no docker daemon: installing podman, buildah and catatonit from apt"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman buildah skopeo fuse-overlayfs uidmap runc catatonit >/dev/null
    fi
    engine=podman
    export BUILDAH_ISOLATION=chroot BUILDAH_FORMAT=docker
    CONTAINERS_CONF=$(mktemp)
    trap 'rm -f "$CONTAINERS_CONF"' EXIT
    cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
[engine]
runtime = "runc"
EOF
    export CONTAINERS_CONF
}

standin_label() {
    "$engine" image inspect --format '{{ index .Config.Labels "org.vit-service.stand-in" }}' \
        "$1" 2>/dev/null | grep -v '<no value>' || true
}

# Sets `base_used` to a sentence naming the base image the build will use.
ensure_base() {
    local base full
    base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
    full=docker.io/library/$base
    if "$engine" image inspect "$base" >/dev/null 2>&1 && [[ -z $(standin_label "$base") ]]; then
        base_used="$base (the real one, already present)"
    elif timeout 120 "$engine" pull -q "$full" >/dev/null 2>&1; then
        base_used="$base (the real one, pulled)"
    else
        if [[ -z $(standin_label "$base") ]]; then
            say "cannot pull $base: building a stand-in from Debian bookworm (debootstrap)"
            "$here/standin-base.sh" "$engine" "$full"  # the real one's name: a pull replaces it
        fi
        base_used="a stand-in for $base, Debian bookworm's python3.11 via debootstrap"
        base_used+=" (the registry cannot be reached)"
    fi
    say "base: $base_used"
}

# Free space where the engine stores layers, against what a GPU build needs there.
room_for_gpu() {
    local root driver need free
    if [[ $engine == docker ]]; then
        read -r root driver < <(docker info --format '{{.DockerRootDir}} {{.Driver}}')
    else
        read -r root driver < <(
            podman info --format '{{.Store.GraphRoot}} {{.Store.GraphDriverName}}')
    fi
    # vfs copies every layer in full at every step; the image itself is ~2.8 GB.
    [[ $driver == vfs ]] && need=40 || need=12
    mkdir -p "$root"
    free=$(df --output=avail -BG "$root" | tail -1 | tr -dc 0-9)
    if ((free < need)); then
        say "skipped: ${free} GB free under $root, and building the GPU image (~2.8 GB)" \
            "with the $driver storage driver needs ${need} GB"
        return 1
    fi
}

pick_engine
say "engine: $engine"
ensure_base
[[ $flavor == gpu ]] && { room_for_gpu || exit 0; }

built=$SECONDS
target=image-cpu
[[ $flavor == gpu ]] && target=image
before=$("$engine" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
"${MAKE:-make}" --no-print-directory "$target" DOCKER="$engine" IMAGE=vit-service
build_s=$((SECONDS - built))
# The image the tag named before this build is left without a name (3 GB for the GPU one, at
# every run on a developer's machine, until the disk is full): removed, unless a container or
# another tag still uses it.
after=$("$engine" image inspect --format '{{.Id}}' "$image")
if [[ -n $before && $before != "$after" ]]; then
    "$engine" rmi "$before" >/dev/null 2>&1 || true
fi
size_mb=$(("$("$engine" image inspect --format '{{.Size}}' "$image")" / 1000000))

tested=$SECONDS
tests=("tests/deploy/test_container_$flavor.py")
# The CPU image also runs as deploy/k8s-cpu's Deployment under `podman kube play` (podman only).
[[ $flavor == cpu ]] && tests+=(tests/deploy/test_kube_play.py)
IMAGE_ENGINE=$engine IMAGE_UNDER_TEST=$image \
    "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
say "passed: $image, $size_mb MB, built by $engine in $((build_s / 60))m$((build_s % 60))s;" \
    "tests $((SECONDS - tested))s; all $((SECONDS - started))s"
say "base: $base_used"
