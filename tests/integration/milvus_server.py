"""A real Milvus server for tests: the standalone binary of the PyPI `milvus` package (2.3.5).

`milvus-server --data DIR` unpacks Milvus into DIR/bin, writes DIR/configs/milvus.yaml and starts
`DIR/bin/milvus run standalone` (embedded etcd, RocksMQ, local storage) as its child. Milvus binds every
interface, so it is only started inside a private network namespace with nothing but loopback (run the
tests under `scripts/isolated.sh`); elsewhere the tests that need it skip. It needs about 0.3-0.6 GB of
memory and 0.5 GB of disk, and is ready in about 8 s.

Use it from a test module by importing the session fixture (pytest registers it under its name):

    from tests.integration.milvus_server import milvus_server_fixture  # noqa: F401

and asking for `milvus_uri` (an `http://127.0.0.1:PORT` URI).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation import in_private_network

SERVER = Path(sys.executable).with_name("milvus-server")
STARTUP_TIMEOUT = 90.0  # seconds; ready in about 8 s on two cores, more on a busy machine
RUN_DIR = Path("/tmp/milvus")  # the binary writes server_id_<pid> here, whatever the data directory


def network_isolation_problem() -> str | None:
    """Why starting a server that binds every interface is not safe here, or None when it is.

    The interfaces come from the kernel for this process's network namespace (`if_nameindex`);
    /sys/class/net is no use: it shows the namespace sysfs was mounted in, the host's.
    """
    if not in_private_network():
        names = ", ".join(sorted(name for _, name in socket.if_nameindex()))
        return (
            f"the Milvus server binds every interface and this network namespace has {names}: "
            "run the tests in a private one, e.g. scripts/isolated.sh .venv/bin/pytest -q tests"
        )
    try:
        with socket.socket() as server, socket.socket() as client:
            server.bind(("127.0.0.1", 0))
            server.listen()
            client.settimeout(2)
            client.connect(server.getsockname())
    except OSError as e:
        return f"loopback does not work in this network namespace ({e}): ip link set lo up"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_port(config: Path) -> int | None:
    """The port the server took: it moves to the next free one when the one asked for is taken."""
    if not config.exists():
        return None
    section = None
    for line in config.read_text().splitlines():
        if re.match(r"[A-Za-z]", line):  # a top-level key
            section = line.split(":", 1)[0]
        elif section == "proxy" and (match := re.match(r"  port: (\d+)", line)):
            return int(match.group(1))
    return None


def wait_ready(process: subprocess.Popen[bytes], config: Path, log: Path) -> str:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"milvus-server exited with {process.returncode}:\n{_tail(log)}")
        port = proxy_port(config)
        if port is not None:
            with socket.socket() as sock:
                sock.settimeout(1)
                reachable = sock.connect_ex(("127.0.0.1", port)) == 0
            if reachable:
                uri = f"http://127.0.0.1:{port}"
                try:
                    client = MilvusClient(uri=uri, timeout=5)
                    try:
                        client.get_server_version()
                        client.list_collections()
                        return uri
                    finally:
                        client.close()
                except MilvusException:
                    pass  # listening, not serving yet
        time.sleep(0.5)
    raise RuntimeError(f"milvus-server not ready after {STARTUP_TIMEOUT:.0f} s:\n{_tail(log)}")


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else "(no output)"


def stop(process: subprocess.Popen[bytes], children: set[int]) -> None:
    """Stop the wrapper and its `milvus run standalone` child: SIGKILL to the process group, by its id.

    Not SIGTERM: it kills the wrapper, but starts a graceful stop of Milvus that does not end (its
    components wait for each other for up to common.gracefulStopTimeout, 1800 s), and the data is
    thrown away anyway.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _running(children) and time.monotonic() < deadline:
        time.sleep(0.1)  # the orphaned child is reaped by whoever adopted it


def _running(pids: set[int]) -> bool:
    """Any of these processes alive (a zombie, killed and waiting for its parent, is not)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("Z", "X"):
                return True
    return False


def _children(pid: int) -> set[int]:
    """The wrapper's children (`milvus run standalone`), which name the files they leave in /tmp/milvus."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found |= {int(child) for child in (task / "children").read_text().split()}
    return found


@contextlib.contextmanager
def running_server(data: Path) -> Iterator[str]:
    """Start `milvus-server --data DATA`, yield its URI, stop it and remove what it wrote."""
    data.mkdir(parents=True, exist_ok=True)
    log = data.parent / f"{data.name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(SERVER), "--data", str(data), "--proxy-port", str(free_port())],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its child by one killpg
        )
    pids: set[int] = set()
    try:
        uri = wait_ready(process, data / "configs" / "milvus.yaml", log)
        pids = _children(process.pid)
        yield uri
    finally:
        pids |= _children(process.pid)
        stop(process, pids)
        shutil.rmtree(data, ignore_errors=True)
        # Only what this server wrote: another server may be using the directory at the same time.
        for pid in pids:
            with contextlib.suppress(OSError):
                (RUN_DIR / f"server_id_{pid}").unlink()
        with contextlib.suppress(OSError):
            RUN_DIR.rmdir()  # when empty


@pytest.fixture(scope="session", name="milvus_uri")
def milvus_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus 2.3.5 standalone server on 127.0.0.1 for the whole session; skips where it cannot run."""
    problem = network_isolation_problem()
    if problem:
        pytest.skip(problem)
    if not SERVER.exists():
        pytest.skip(f"{SERVER} not found: install the test extra (it pins milvus==2.3.5)")
    with running_server(tmp_path_factory.mktemp("milvus-server") / "data") as uri:
        yield uri
