"""Issue 15, item 14 (in part): local mode writes keys and credentials readable by this user only,
from the start: a 0600 file in a 0700 folder, never a moment where the group or others could read it.

The check watches the file system calls themselves: whenever the credential file is created or opened
for writing, its folder must already be 0700 and the file (if it exists) 0600, and a file created with
os.open must be created with no group or other bits. The umask is 0 for the test, so the modes come
from the code, not from a kind umask.
"""

from __future__ import annotations

import builtins
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tandem.api.v1alpha1.common import SecretKeyReference
from tandem.core.references import ResolvedKnowledgeBase
from tandem.platform.local.manifests import Manifests
from tandem.platform.local.references import secret_token_file, write_private

SECRET = "sk-tenant-0123456789"
_WRITES = "wax+"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@dataclass
class Watched:
    opened: list[str] = field(default_factory=list)  # every creation or opening for writing of the file
    exposed: list[str] = field(default_factory=list)  # each of those where someone else could read it


def _watch(monkeypatch: pytest.MonkeyPatch, target: Path) -> Watched:
    """Watch how `target` is created and written."""
    watched = Watched()
    exposed = watched.exposed
    real_os_open, real_io_open = os.open, io.open

    def check(how: str) -> None:
        watched.opened.append(how)
        if target.parent.exists() and _mode(target.parent) & 0o077:
            exposed.append(f"{how}: folder is {oct(_mode(target.parent))}")
        if target.exists() and _mode(target) & 0o077:
            exposed.append(f"{how}: file is {oct(_mode(target))}")

    def os_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        if Path(os.fsdecode(path)) == target:
            if flags & os.O_CREAT and not target.exists() and mode & 0o077:
                exposed.append(f"os.open creates it with mode {oct(mode)}")
            check("os.open")
        return real_os_open(path, flags, mode, *args, **kwargs)

    def io_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        writes = any(c in mode for c in _WRITES)
        if writes and isinstance(file, str | os.PathLike) and Path(os.fsdecode(file)) == target:
            if not target.exists():
                exposed.append("open() creates it with the default mode (0666 less the umask)")
            check(f"open({mode!r})")
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(builtins, "open", io_open)
    return watched


def _prepare_stale(target: Path) -> None:
    """What an older version (or a careless hand) left: a readable folder and a readable file."""
    target.parent.mkdir(parents=True)
    target.parent.chmod(0o755)
    target.write_text("old key")
    target.chmod(0o644)


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "over-readable-leftovers"])
def test_write_private_never_exposes_the_file(
    stale: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_umask: None
) -> None:
    target = tmp_path / "state" / "endpoints" / "team-assistant" / "keys" / "staff"
    if stale:
        _prepare_stale(target)
    watched = _watch(monkeypatch, target)
    write_private(target, SECRET)
    assert watched.opened and watched.exposed == []
    assert _mode(target) == 0o600 and _mode(target.parent) == 0o700
    assert target.read_text() == SECRET


def test_the_milvus_token_file_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_umask: None
) -> None:
    manifests = Manifests(secrets={("team", "milvus"): {"token": SECRET}})
    kb = ResolvedKnowledgeBase(
        "team",
        "handbook",
        "c",
        "http://127.0.0.1:19530",
        "r1",
        credentials=SecretKeyReference(name="milvus", key="token"),
    )
    target = tmp_path / "secrets" / "milvus-team-handbook" / "token"
    watched = _watch(monkeypatch, target)
    assert secret_token_file(tmp_path, manifests, kb) == str(target)
    assert watched.opened and watched.exposed == []
    assert _mode(target) == 0o600 and _mode(target.parent) == 0o700


def _write_then_chmod(path: Path, text: str) -> None:
    """The usual mistake (Tandem's own before write_private): write, then restrict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    path.parent.chmod(0o700)


@pytest.mark.parametrize("writer", [_write_then_chmod], ids=["write-then-chmod"])
def test_the_check_sees_a_file_that_was_readable_for_a_moment(
    writer: Callable[[Path, str], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_umask: None
) -> None:
    target = tmp_path / "keys" / "staff"
    watched = _watch(monkeypatch, target)
    writer(target, SECRET)
    assert _mode(target) == 0o600  # looks right afterwards...
    assert watched.exposed  # ...but was not from the start
