#!/bin/sh
# Run a command in a private network namespace that has only loopback (up, 127.0.0.1).
#
#   scripts/isolated.sh .venv/bin/pytest -q tests
#
# Servers that bind every interface (the Milvus standalone server, Ray) are then reachable from this
# command and its children only, and nothing they do reaches another machine. Tests that start such a
# server check that they run in such a namespace and skip otherwise.
#
# Without permission to create a namespace (not root, no user namespaces), the command runs directly,
# with a warning: those tests then skip.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 64
fi

# Probe first, so that a failure of the command itself is never mistaken for unshare being refused.
if unshare -n true 2>/dev/null; then
    exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi

echo "isolated.sh: cannot create a network namespace (unshare -n was refused);" \
    "running without isolation: tests that need one will skip" >&2
exec "$@"
