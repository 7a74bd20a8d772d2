#!/usr/bin/env bash
# Build a stand-in for the Python base image (python:3.11-slim-bookworm) from Debian packages, for a
# machine that cannot pull it (no Docker Hub), and load it into the local image store.
#
#   scripts/images/build-base-image.sh BUILDER IMAGE      (BUILDER: buildah, podman or docker; as root)
#
# Same Debian release (bookworm) and Python minor version (3.11, Debian's python3) as the real base, laid
# out where the Dockerfiles and the real image have it: `python3 -m venv /usr/local` gives
# /usr/local/bin/python, python3, python3.11, pip, and /usr/local/lib/python3.11/site-packages (pip and
# setuptools there, nothing of Debian's Python packages), so `pip install --prefix=/install` in a build
# stage and `COPY --from=build /install /usr/local` behave as on the real base. Debian is reached through
# the host's own apt sources (debian-mirrors.py): debootstrap from them, the same sources inside the
# image (the worker's `apt-get install wget` uses them), and the release's updates applied.
# Takes 2 to 3 minutes; idempotent callers check `BUILDER image exists` first (build-images.sh does).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RELEASE=bookworm
PYTHON_MINOR=3.11
DEBIAN_MAJOR=12

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BUILDER IMAGE" >&2
    exit 64
fi
builder=$1
image=$2
command -v debootstrap >/dev/null || {
    echo "build-base-image: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 2
}
[[ $(id -u) -eq 0 ]] || {
    echo "build-base-image: debootstrap needs root" >&2
    exit 2
}

work=$(mktemp -d /var/tmp/tandem-base.XXXXXX)
rootfs=$work/rootfs
cleanup() {
    mountpoint -q "$rootfs/proc" && umount "$rootfs/proc"
    rm -rf "$work"
}
trap cleanup EXIT

mapfile -t mirrors < <(python3 "$here/debian-mirrors.py" "$RELEASE")
main_uri=${mirrors[0]#* }
started=$SECONDS
echo "build-base-image: debootstrap $RELEASE from $main_uri"
for attempt in 1 2; do  # a mirror's hiccup should not fail a CI run: one more try from scratch
    rm -rf "$rootfs"
    if debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
        "$RELEASE" "$rootfs" "$main_uri" >"$work/debootstrap.log" 2>&1; then
        break
    fi
    tail -30 "$work/debootstrap.log" >&2
    if ((attempt == 2)); then
        exit 1
    fi
    echo "build-base-image: debootstrap failed; trying again" >&2
done

# apt inside the image: the host's mirrors for the release, its updates and security suites.
rm -f "$rootfs/etc/apt/sources.list"
{
    for line in "${mirrors[@]}"; do
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "${line#* }" "${line%% *}"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
    done
} >"$rootfs/etc/apt/sources.list.d/debian.sources"
# As Debian's slim images: no documentation, manual pages or translations (kept out of later installs).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

mount -t proc proc "$rootfs/proc"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -euc '
    apt-get -o Acquire::Retries=3 update -qq
    apt-get -o Acquire::Retries=3 upgrade -y -qq >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    # The real image has its Python under /usr/local: a virtual environment there, without Debian'"'"'s
    # Python packages, holding pip and setuptools (from Debian'"'"'s ensurepip wheels).
    python3 -m venv /usr/local
    rm -f /usr/local/bin/activate* /usr/local/bin/Activate.ps1
    /usr/local/bin/python -m pip --version >/dev/null
'
umount "$rootfs/proc"
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,groff,info,lintian}/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
find "$rootfs/usr/share/locale" -mindepth 1 -not -name locale.alias -delete

version=$(chroot "$rootfs" /usr/local/bin/python -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
debian=$(cat "$rootfs/etc/debian_version")
[[ $version == "$PYTHON_MINOR".* ]] || {
    echo "build-base-image: Python $version, expected $PYTHON_MINOR" >&2
    exit 1
}
[[ $debian == "$DEBIAN_MAJOR".* ]] || {
    echo "build-base-image: Debian $debian, expected $DEBIAN_MAJOR ($RELEASE)" >&2
    exit 1
}

description="Stand-in for python:$PYTHON_MINOR-slim-$RELEASE: Debian $debian's Python $version in a venv at /usr/local"
envs=(LANG=C.UTF-8 PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin)
case "$builder" in
    buildah)
        ctr=$(buildah from scratch)
        mnt=$(buildah mount "$ctr")
        cp -a "$rootfs/." "$mnt/"
        buildah umount "$ctr" >/dev/null
        buildah config --cmd python3 "${envs[@]/#/--env=}" \
            --label "org.opencontainers.image.description=$description" \
            --label "org.opencontainers.image.version=$version" "$ctr"
        buildah commit --quiet --rm "$ctr" "$image" >/dev/null
        ;;
    podman | docker)
        tar -C "$rootfs" --numeric-owner -c . | "$builder" import \
            --change 'CMD ["python3"]' "${envs[@]/#/--change=ENV }" \
            --change "LABEL org.opencontainers.image.description=\"$description\"" - "$image" >/dev/null
        ;;
    *)
        echo "build-base-image: unknown builder $builder" >&2
        exit 64
        ;;
esac
echo "build-base-image: $image ($description) in $((SECONDS - started)) s"
