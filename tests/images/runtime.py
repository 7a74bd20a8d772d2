"""Run the built images (`make images`) for their smoke tests: buildah, chroot isolation, loopback only.

Each test takes a fresh working container of the image (`buildah from`), runs commands in it with
`buildah run --isolation chroot --network host` as the image's own user, with a fresh host folder as its
/tmp (the chart's emptyDir) and nothing else writable by that user, and finally lists what the run
wrote into the container's own layer outside /tmp (the chart runs every image with a read-only root
filesystem: such a write would fail in a cluster). `make test-images` runs them under
scripts/isolated.sh, so "the host's network" is a private namespace that has only loopback.

Without buildah, or without the images, the tests skip and say so; TANDEM_REQUIRE_IMAGES=1 (CI) turns
the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("operator", "worker", "gateway")
REQUIRE = "TANDEM_REQUIRE_IMAGES"
# What `buildah run` itself leaves in a container's layer (the mount point of its .containerenv file).
RUNTIME_FILES = {"run", "run/.containerenv"}


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE} is set and {reason}", pytrace=False)
    pytest.skip(reason)


def version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def image_ref(name: str) -> str:
    """The name `make images` gives the image (scripts/build-images.sh: IMAGE_REGISTRY, IMAGE_TAG)."""
    prefix = (os.environ.get("IMAGE_REGISTRY") or "ghcr.io/tandem-dev").rstrip("/")
    return f"{prefix}/tandem-{name}:{os.environ.get('IMAGE_TAG') or version()}"


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Image:
    name: str
    ref: str
    config: dict[str, Any]  # the image's OCI config: User, Env, Entrypoint, Cmd, WorkingDir, Labels
    history: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "0")

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("Env") or [])


def image(name: str) -> Image:
    """The built image, or a skip (a failure under TANDEM_REQUIRE_IMAGES=1) saying what is missing."""
    if shutil.which("buildah") is None:
        skip_or_fail(
            "the image smoke tests run the images with buildah, which is not installed "
            "(apt-get install buildah), and the images are built by `make images`"
        )
    ref = image_ref(name)
    try:
        inspected = json.loads(buildah("inspect", "--type", "image", ref))
    except RuntimeError:
        skip_or_fail(f"the image {ref} is not built: run `make images`")
    config = inspected.get("Docker", {}).get("config") or inspected["OCIv1"]["config"]
    return Image(name, ref, config, inspected["OCIv1"].get("history", []))


class Container:
    """A working container of an image; `run` starts a command in it, `written` lists its writes."""

    def __init__(self, img: Image, tmp: Path) -> None:
        self.image = img
        self.tmp = tmp  # the host folder that is the container's /tmp
        self.name = buildah("from", "--pull=false", "--quiet", img.ref).strip()
        self.processes: list[subprocess.Popen[Any]] = []
        self.mounts: set[str] = set()

    def command(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
    ) -> list[str]:
        args = ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", self.image.user]
        args += ["--volume", f"{self.tmp}:/tmp"]
        for source, target in (volumes or {}).items():
            args += ["--volume", f"{source}:{target}:ro"]
            self.mounts.add(target.strip("/"))
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return [*args, self.name, "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, env=env, volumes=volumes),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(
        self,
        argv: Sequence[str],
        *,
        log: IO[bytes],
        env: dict[str, str] | None = None,
        volumes: dict[Path, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self.command(argv, env=env, volumes=volumes),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[Any], timeout: float = 30) -> int:
        """SIGTERM to the command (as a kubelet sends it to a container), then SIGKILL to what is left.

        The signal goes to the command's processes, not to `buildah run`, which would kill them."""
        if process.poll() is None:
            for pid in _group(process.pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        return int(process.returncode)

    def written(self) -> list[str]:
        """Paths the runs created, changed or deleted in the container's layer, outside /tmp and the
        mount points asked for: under the chart's readOnlyRootFilesystem each would have failed."""
        merged = buildah("mount", self.name).strip()
        try:
            upper = _upperdir(merged)
            found = []
            for path in sorted(upper.rglob("*")):
                relative = path.relative_to(upper).as_posix()
                if relative in RUNTIME_FILES or relative == "tmp" or relative.startswith("tmp/"):
                    continue
                if any(relative == m or m.startswith(relative + "/") for m in self.mounts):
                    continue  # a mount point buildah made (or its parent folders)
                found.append(relative)
            return found
        finally:
            buildah("umount", self.name)

    def remove(self) -> None:
        for process in self.processes:
            self.stop(process, timeout=10)
        buildah("rm", self.name)


def _upperdir(merged: str) -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] != merged:
            continue
        options = line.split(" - ", 1)[1].split()[2]
        for option in options.split(","):
            if option.startswith("upperdir="):
                return Path(option.removeprefix("upperdir="))
    raise RuntimeError(f"{merged}: not an overlay mount with an upper directory")


def _group(pgid: int) -> list[int]:
    """The processes of a process group but buildah's own (the command and its children)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and "buildah" not in comm:  # buildah, memfd:buildah-chroot-...
            found.append(int(stat.parent.name))
    return found


@contextmanager
def container(img: Image) -> Iterator[Container]:
    """A fresh working container of the image, with a fresh /tmp that its user may write (the chart's
    emptyDir); removed afterwards, with whatever it still runs."""
    tmp = Path(tempfile.mkdtemp(prefix=f"tandem-{img.name}-tmp-"))
    tmp.chmod(0o1777)
    box = Container(img, tmp)
    try:
        yield box
    finally:
        box.remove()
        shutil.rmtree(tmp, ignore_errors=True)
