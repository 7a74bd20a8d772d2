"""The adapter folder as one tar+gzip blob: packed reproducibly, read back with bounds and safely.

Packing is deterministic (sorted names, zero times and owners, gzip without a timestamp), so publishing
the same folder twice gives the same blob digest. Unpacking refuses absolute names, `..`, links, devices
and anything but regular files and directories, counts every decompressed byte against a limit while it
reads, and extracts with tarfile's `data` filter as a second line of defence.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import ArtifactDigestMismatch, ArtifactError, ArtifactInvalid, ArtifactTooLarge, ArtifactUnsafe

# The most an adapter artifact may take, compressed or unpacked (a LoRA adapter is megabytes).
MAX_ARTIFACT_BYTES = 2 * 1024**3
# The most members an adapter archive may have (it has two or three).
MAX_MEMBERS = 10_000


def pack(folder: Path, out: Path) -> tuple[str, int]:
    """Write `folder`'s files to `out` as tar+gzip; returns the blob's `sha256:` digest and size."""
    files: list[tuple[str, Path]] = []
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ArtifactInvalid(f"{path}: not a regular file (links and devices are not published)")
        files.append((path.relative_to(folder).as_posix(), path))
    if not files:
        raise ArtifactInvalid(f"{folder}: no files to publish")
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in files:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as f:
                tar.addfile(info, f)
    return file_sha256(out), out.stat().st_size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def copy_verified(chunks: Iterable[bytes], out: BinaryIO, *, what: str, digest: str, limit: int) -> int:
    """Write `chunks` to `out` while hashing and counting them: stops with ArtifactTooLarge as soon as
    more than `limit` bytes came, and raises ArtifactDigestMismatch when their sha256 is not `digest`."""
    sha, read = hashlib.sha256(), 0
    for chunk in chunks:
        read += len(chunk)
        if read > limit:
            raise ArtifactTooLarge(what, limit, read)
        sha.update(chunk)
        out.write(chunk)
    found = "sha256:" + sha.hexdigest()
    if found != digest:
        raise ArtifactDigestMismatch(what, digest, found)
    return read


class _Bounded(io.RawIOBase):
    """A reader that fails once more than `limit` bytes were read from it (the decompressed stream)."""

    def __init__(self, inner: BinaryIO, limit: int, what: str) -> None:
        self.inner, self.limit, self.what, self.read_bytes = inner, limit, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise ArtifactTooLarge(self.what, self.limit, self.read_bytes)
        buffer[: len(data)] = data
        return len(data)


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or path.is_absolute():
        raise ArtifactUnsafe(f"archive member {name!r}: absolute or empty name")
    if ".." in path.parts:
        raise ArtifactUnsafe(f"archive member {name!r}: `..` in its name")
    if not (member.isreg() or member.isdir()):
        kind = "a link" if (member.issym() or member.islnk()) else "not a regular file or directory"
        raise ArtifactUnsafe(f"archive member {name!r}: {kind}")


def extract(archive: Path, dest: Path, *, limit: int = MAX_ARTIFACT_BYTES, what: str = "archive") -> None:
    """Unpack the tar+gzip `archive` into the (existing, empty) folder `dest`, refusing unsafe members
    (ArtifactUnsafe) and stopping once more than `limit` bytes were decompressed (ArtifactTooLarge)."""
    try:
        with gzip.open(archive, "rb") as gz:
            bounded = io.BufferedReader(_Bounded(gz, limit, what), buffer_size=1 << 16)  # type: ignore[arg-type]
            with tarfile.open(fileobj=bounded, mode="r|") as tar:
                for members, member in enumerate(tar, start=1):
                    if members > MAX_MEMBERS:
                        raise ArtifactUnsafe(f"{what}: more than {MAX_MEMBERS} members")
                    check_member(member)
                    tar.extract(member, dest, filter="data")
    except ArtifactError:
        raise
    except tarfile.FilterError as e:  # what the `data` filter refused and check_member let through
        raise ArtifactUnsafe(f"{what}: {e}") from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ArtifactInvalid(f"{what}: not a readable tar+gzip archive ({type(e).__name__}: {e})") from None
