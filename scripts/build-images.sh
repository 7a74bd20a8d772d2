#!/usr/bin/env bash
# Build the operator, worker and gateway images from images/*/Dockerfile (`make images`).
#
#   scripts/build-images.sh [NAME...]      NAME: operator, worker, gateway (default: all three)
#
# Environment:
#   IMAGE_BUILDER    docker, podman or buildah (default: docker if its engine answers, else podman, else
#                    buildah; buildah builds with --isolation chroot, which needs no daemon and no
#                    user namespaces)
#   IMAGE_REGISTRY   where the images go, e.g. registry.example.com/team: they are named
#                    $IMAGE_REGISTRY/tandem-NAME:TAG and pushed after the build. Unset: the chart's
#                    names, ghcr.io/tandem-dev/tandem-NAME:TAG, built locally and not pushed.
#   IMAGE_TAG        default: the project's version (pyproject.toml), the chart's appVersion
#   PYTHON_IMAGE     the base image; default: the Dockerfiles' (python:3.11.13-slim-bookworm) when it is
#                    here or can be pulled, else a stand-in built from Debian packages once and kept
#                    (scripts/images/build-base-image.sh: same Debian release and Python minor version)
#   IMAGE_GIT_REF    build from this commit (git archive) instead of the work tree, e.g. HEAD
#   TORCH_INDEX_URL  the index torch comes from; default: a local index of pip's own wheel of the pinned
#                    torch when pip has one (scripts/images/pip-context.py), else the PyTorch index
#   IMAGE_PRUNE      1: after each image, remove its build stage and the builder's dangling images (the
#                    layer cache of earlier builds): about 2 GB less on disk per image, and the next
#                    build of that image starts from nothing. CI sets it; the edit loop wants the cache.
#
# buildah and podman builds get the host's pip configuration (pip-context.py): its indexes, find-links,
# CA bundle and constraints, mounted read-only into the build's RUN steps, never copied into an image.
# Prints each image's build time and size; the last lines are `image NAME REF SIZE_MB SECONDS`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

names=("$@")
((${#names[@]})) || names=(operator worker gateway)
for name in "${names[@]}"; do
    [[ -f images/$name/Dockerfile ]] || {
        echo "build-images: no images/$name/Dockerfile" >&2
        exit 64
    }
done

say() { printf 'build-images: %s\n' "$*"; }

# -- the builder ------------------------------------------------------------------------------------------
builder=${IMAGE_BUILDER:-}
if [[ -z $builder ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        builder=docker
    elif command -v podman >/dev/null && podman info >/dev/null 2>&1; then
        builder=podman
    elif command -v buildah >/dev/null; then
        builder=buildah
    else
        echo "build-images: no image builder: install docker, podman or buildah (apt-get install buildah)" >&2
        exit 2
    fi
fi
image_exists() {
    case $builder in
        buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
        podman) podman image exists "$1" ;;
        docker) docker image inspect "$1" >/dev/null 2>&1 ;;
    esac
}
image_size_mb() {
    local bytes
    case $builder in
        buildah) bytes=$(buildah images --noheading --format '{{.Size}}' "$1" | head -1) ;;
        *) bytes=$("$builder" image inspect --format '{{.Size}}' "$1") ;;
    esac
    # buildah prints a human size ("1.23 GB"); docker and podman bytes
    python3 -c '
import re, sys
text = sys.argv[1].strip()
m = re.fullmatch(r"([\d.]+)\s*([kKMG]?B)?", text)
unit = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, None: 1}[m.group(2)]
print(round(float(m.group(1)) * unit / 1e6))' "$bytes"
}

# -- names and tags ---------------------------------------------------------------------------------------
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
tag=${IMAGE_TAG:-$version}
prefix=${IMAGE_REGISTRY:-ghcr.io/tandem-dev}
prefix=${prefix%/}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ -n ${IMAGE_GIT_REF:-} ]]; then
    IMAGE_GIT_REF=$(git rev-parse "$IMAGE_GIT_REF^{commit}")  # one commit for every image
    revision=$IMAGE_GIT_REF
elif ! git diff --quiet HEAD -- operator pyproject.toml README.md 2>/dev/null; then
    revision="$revision-dirty"  # built from a work tree with changes
fi

# -- the base ---------------------------------------------------------------------------------------------
default_base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' images/operator/Dockerfile)
standin=localhost/tandem-python-base:3.11-bookworm
base=${PYTHON_IMAGE:-}
total_started=$SECONDS
if [[ -z $base ]]; then
    if image_exists "$default_base" || timeout 180 "$builder" pull "$default_base" >/dev/null 2>&1; then
        base=$default_base
    else
        base=$standin
        say "the base image $default_base cannot be pulled here: building on a stand-in, $standin"
        say "  (Debian bookworm's python3 3.11 from the Debian mirror apt uses, laid out as in the real base)"
        if image_exists "$standin"; then
            say "  $standin is already built (remove it to rebuild: $builder rmi $standin)"
        else
            scripts/images/build-base-image.sh "$builder" "$standin"
        fi
    fi
fi
say "builder $builder, base $base, tag $tag"

# -- the host's pip configuration (buildah, podman) -------------------------------------------------------
# A fixed folder: its path is in a build arg (TORCH_INDEX_URL), and the layer cache keys on build args.
context=/var/tmp/tandem-image-build
rm -rf "$context"
mkdir -p "$context"
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' images/worker/Dockerfile)
torch_variant=$(sed -n 's/^ARG TORCH_VARIANT=//p' images/worker/Dockerfile)
extra=()       # mounts: the build stage only
build_args=()  # both passes (the same build args, or the cache misses)
if [[ $builder != docker ]]; then
    while read -r what value; do
        case $what in
            # `mount SRC:DST`, or `mount PATH` for the same path inside
            mount) [[ $value == *:* ]] && extra+=("--volume=$value:ro") || extra+=("--volume=$value:$value:ro") ;;
            build-arg) build_args+=("--build-arg=$value") ;;
            note) say "$value" ;;
        esac
    done < <(python3 scripts/images/pip-context.py "$context" "$torch_version" "$torch_variant")
elif [[ -n $(python3 -m pip config list 2>/dev/null) ]]; then
    say "note: docker builds do not see this host's pip configuration (pip config list): they use PyPI"
fi
[[ -n ${TORCH_INDEX_URL:-} ]] && build_args+=("--build-arg=TORCH_INDEX_URL=$TORCH_INDEX_URL")

# -- build ------------------------------------------------------------------------------------------------
results=()
for name in "${names[@]}"; do
    ref=$prefix/tandem-$name:$tag
    args=(
        -f "images/$name/Dockerfile" -t "$ref"
        --build-arg "PYTHON_IMAGE=$base" --build-arg "VERSION=$tag"
        --label "org.opencontainers.image.revision=$revision"
        --label "org.opencontainers.image.source=https://github.com/tandem-dev/tandem"
        --label "org.opencontainers.image.base.name=$base"
    )
    started=$SECONDS
    say "building $ref"
    # The build context: a snapshot of what the .dockerignore allow-list lets in (pyproject.toml,
    # README.md, operator/), so that both passes see the same files while the work tree changes.
    src=$context/src-$name
    mkdir -p "$src"
    mapfile -t allowed < <(sed -n 's/^!//p' "images/$name/Dockerfile.dockerignore")
    if [[ -n ${IMAGE_GIT_REF:-} ]]; then
        git archive --format=tar "$IMAGE_GIT_REF" -- "${allowed[@]}" | tar -x -C "$src"
    else
        for path in "${allowed[@]}"; do
            [[ -e $path ]] && cp -a --parents "$path" "$src/"
        done
    fi
    find "$src" -depth \( -name __pycache__ -o -name '.*_cache' \) -exec rm -rf {} +
    find "$src" -name '*.pyc' -delete
    case $builder in
        buildah | podman)
            # Two passes, so that the host's pip configuration reaches the build stage only: a mount's
            # target left behind (an empty /etc/pip.conf, /opt/wheels) would otherwise stay in the final
            # image. First the build stage with the mounts, then the whole Dockerfile without them, which
            # takes the build stage from the layer cache (same instructions, same build args).
            # Docker's image format: OCI's has no HEALTHCHECK, which the operator and gateway images carry.
            common=(--format docker --network host --layers --ignorefile "images/$name/Dockerfile.dockerignore")
            [[ $builder == buildah ]] && common+=(--isolation chroot --pull=false) || common+=(--pull=missing)
            "$builder" build "${common[@]}" "${extra[@]}" "${build_args[@]}" \
                "${args[@]/#$ref/localhost/tandem-$name-build:$tag}" --target build "$src"
            "$builder" build "${common[@]}" "${build_args[@]}" "${args[@]}" "$src" | tee "$context/$name.log"
            # Every RUN of the build stage (the first of two) must have come from the cache.
            awk '/^\[1\/2\] STEP [0-9]+\/[0-9]+: RUN/ { run = 1; next }
                 run && /^--> Using cache/ { run = 0; next }
                 run && /^(\[|-->)/ { bad = 1 }
                 END { exit bad }' "$context/$name.log" || {
                echo "build-images: the second pass ran the build stage again instead of taking it from the" \
                    "cache (without the host's pip configuration)" >&2
                exit 1
            }
            ;;
        docker)
            DOCKER_BUILDKIT=1 docker build "${build_args[@]}" "${args[@]}" "$src"
            ;;
    esac
    seconds=$((SECONDS - started))
    size=$(image_size_mb "$ref")
    say "built $ref in $seconds s: $size MB"
    results+=("image $name $ref $size $seconds")
    if [[ -n ${IMAGE_REGISTRY:-} ]]; then
        say "pushing $ref"
        "$builder" push "$ref"
    fi
    if [[ ${IMAGE_PRUNE:-0} == 1 ]]; then
        # Best effort: an image still used by a container (a build interrupted earlier left its working
        # container) stays, and says so; the build itself succeeded.
        pruned=ok
        case $builder in
            buildah | podman)
                "$builder" rmi "localhost/tandem-$name-build:$tag" >/dev/null || pruned=partly
                "$builder" rmi --prune >/dev/null || pruned=partly
                ;;
            docker) docker image prune --force >/dev/null || pruned=partly ;;
        esac
        say "pruned the build stage and dangling images (IMAGE_PRUNE=1): $pruned"
    fi
done

say "done in $((SECONDS - total_started)) s"
printf '%s\n' "${results[@]}"
