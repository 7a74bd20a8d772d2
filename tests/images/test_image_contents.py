"""What is in the built images: the user, the labels, no build tools or caches, a size within budget,
and every module that what each image runs imports, imported by that image's own Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.runtime import NAMES, Image, buildah, container, image, version

# Sizes as `buildah images` reports them (uncompressed), with room over images/README.md's table: a
# package that doubles an image fails here rather than in a node's disk.
BUDGET_MB = {"operator": 400, "worker": 3500, "gateway": 2500}
LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.source",
    "org.opencontainers.image.base.name",
)
# Nothing of the build may reach a final image: compilers, the build stage's folders, pip's and apt's
# caches, or what a build mounted (the host's pip configuration, the local torch index).
BUILD_LEFTOVERS = (
    "usr/bin/gcc",
    "usr/bin/cc",
    "usr/bin/g++",
    "usr/bin/make",
    "usr/bin/git",
    "src",
    "install",
    "app",
    "root/.cache",
    "tmp/.cache",
    "etc/pip.conf",
    "etc/xdg/pip",
    "opt/wheels",
    "opt/pypi",
    "var/tmp/tandem-image-build",
)
# What each image runs: the operator's ENTRYPOINT module, the gateway's CMD module, and for the worker
# every workload module but the gateway (ingest, training, adapter sync, RAFT, evaluation, Ray submit).
ROOTS = {
    "operator": ["tandem.platform.kubernetes.__main__"],
    "worker": ["--workloads-but-gateway"],
    "gateway": ["tandem.workloads.gateway.__main__"],
}
HEAVY = ("torch", "ray", "transformers", "sentence_transformers", "peft", "pymilvus")


@pytest.fixture(scope="module", params=NAMES)
def img(request: pytest.FixtureRequest) -> Image:
    return image(str(request.param))


@pytest.fixture(scope="module")
def rootfs(img: Image) -> Iterator[Path]:
    """The image's file system, mounted read-only for reading here."""
    name = buildah("from", "--pull=false", "--quiet", img.ref).strip()
    try:
        yield Path(buildah("mount", name).strip())
    finally:
        buildah("umount", name)
        buildah("rm", name)


def test_runs_as_a_numeric_non_root_user(img: Image, rootfs: Path) -> None:
    assert re.fullmatch(r"\d+:\d+", img.user), f"USER {img.user}: numeric uid:gid (runAsNonRoot checks it)"
    uid, gid = (int(x) for x in img.user.split(":"))
    assert uid != 0 and gid != 0
    assert img.env.get("HOME") == "/tmp" and img.config.get("WorkingDir") == "/tmp"
    # Nothing in the image is the user's to write but /tmp (a read-only root file system in the chart).
    owned = [
        str(p.relative_to(rootfs))
        for top in ("usr", "etc", "opt", "srv", "home", "var/lib")
        if (rootfs / top).exists()
        for p in (rootfs / top).rglob("*")
        if not p.is_symlink() and p.lstat().st_uid == uid
    ]
    assert not owned, owned[:20]


def test_labels(img: Image) -> None:
    labels = img.labels
    missing = [key for key in LABELS if not labels.get(key)]
    assert not missing, missing
    assert labels["org.opencontainers.image.title"] == f"tandem-{img.name}"
    assert labels["org.opencontainers.image.version"] == version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_no_build_tools_or_caches(img: Image, rootfs: Path) -> None:
    present = [path for path in BUILD_LEFTOVERS if (rootfs / path).exists() or (rootfs / path).is_symlink()]
    assert not present, f"left over from the build: {present}"
    apt_lists = [
        p.name for p in (rootfs / "var/lib/apt/lists").glob("*") if p.name not in ("lock", "partial")
    ]
    assert not apt_lists, apt_lists[:5]
    pip_caches = [str(p.relative_to(rootfs)) for p in rootfs.glob("*/.cache/pip")]
    assert not pip_caches, pip_caches


def test_health_check_kept(img: Image) -> None:
    """The image format keeps the Dockerfile's HEALTHCHECK (OCI's drops it)."""
    check = img.config.get("Healthcheck")
    if img.name == "worker":
        assert not check or check.get("Test") == ["NONE"], check
    else:
        assert check and "/healthz" in " ".join(check["Test"]), check


def test_size_within_budget(img: Image) -> None:
    size = buildah("images", "--noheading", "--format", "{{.Size}}", img.ref).split("\n")[0].strip()
    number, unit = re.fullmatch(r"([\d.]+)\s*([kMG]?B)", size).groups()  # type: ignore[union-attr]
    megabytes = float(number) * {"B": 1e-6, "kB": 1e-3, "MB": 1, "GB": 1e3}[unit]
    assert megabytes <= BUDGET_MB[img.name], f"{img.ref}: {size}, over its budget of {BUDGET_MB[img.name]} MB"


def test_what_it_runs_imports_with_its_own_packages(img: Image) -> None:
    """Every third-party module that the image's own tandem package imports (following tandem's imports,
    those inside functions included) is imported by the image's Python, from its installed packages."""
    script = Path(__file__).with_name("import_closure.py")
    heavy = f"import importlib.util as u; print([m for m in {list(HEAVY)!r} if u.find_spec(m)])"
    with container(img) as box:
        done = box.run(
            ["python", "/opt/tandem-test/import_closure.py", *ROOTS[img.name]],
            volumes={script: "/opt/tandem-test/import_closure.py"},
            timeout=300,
        )
        installed = box.run(["python", "-c", heavy], timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["base"] == "/usr/local/lib/python3.11/site-packages", report["base"]
    assert report["imports"], report
    assert not report["failed"], report["failed"]
    if img.name == "operator":  # kopf and the API client only: no ML library imported, nor installed
        assert not set(HEAVY) & set(report["imports"]), report["imports"]
        assert installed.stdout.strip() == "[]", installed.stdout + installed.stderr
