"""Shared pieces of the KnowledgeBase benchmarks: a corpus of real text, cached embeddings, timing
statistics, memory sampling, and a Milvus 2.3.5 standalone server started only in a private network
namespace.

The corpus is the docstrings of the Python files on this machine (the standard library, then the
packages of the virtual environment), read with `ast` (nothing is imported or executed), cut into
passages of about 80 words and shuffled with a fixed seed: varied, real English and technical text,
the same on every machine with the same Python and packages.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = RESULTS / "cache"  # ignored by git (benchmarks/results/.gitignore)
for entry in (str(ROOT), str(ROOT / "operator")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "all-MiniLM-L6-v2"
PASSAGE_WORDS = 80
SEED = 0


# -- corpus ----------------------------------------------------------------------------------------------


def _source_roots() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    return [stdlib, purelib] if purelib != stdlib else [stdlib]


def docstrings(limit_words: int) -> Iterator[str]:
    """Docstrings of the Python files on this machine, whitespace-normalised, in a stable order."""
    seen: set[str] = set()
    total = 0
    for root in _source_roots():
        for path in sorted(root.rglob("*.py")):
            if "site-packages" in path.parts and root.name != "site-packages":
                continue  # the standard library's own site-packages is the venv's, read second
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, OSError, RecursionError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                text = ast.get_docstring(node)
                if not text:
                    continue
                text = re.sub(r"\s+", " ", text).strip()
                if len(text) < 120 or text in seen:
                    continue
                seen.add(text)
                yield text
                total += len(text.split())
                if total >= limit_words:
                    return


def passages(count: int, words: int = PASSAGE_WORDS) -> list[str]:
    """`count` distinct passages of about `words` words, shuffled with a fixed seed (cached: reading every
    docstring takes about a minute)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"passages-{count}-{words}-{platform.python_version()}.json"
    if cached.exists():
        return list(json.loads(cached.read_text()))
    out: list[str] = []
    seen: set[str] = set()
    for text in docstrings(limit_words=count * words * 3):
        tokens = text.split()
        for start in range(0, len(tokens), words):
            piece = tokens[start : start + words]
            if len(piece) < 20:
                continue
            passage = " ".join(piece)
            if passage not in seen:
                seen.add(passage)
                out.append(passage)
    random.Random(SEED).shuffle(out)
    if len(out) < count:
        raise SystemExit(f"only {len(out)} passages of text found on this machine, {count} asked for")
    cached.write_text(json.dumps(out[:count]))
    return out[:count]


def query_text(passage: str, words: int = 12) -> str:
    """A short query made of a passage's first words (what a user would type, roughly)."""
    return " ".join(passage.split()[:words])


# -- embeddings --------------------------------------------------------------------------------------


def load_embedder(batch_size: int = 32) -> Any:
    from tandem.workloads.knowledge.embedding import Embedder

    return Embedder(MODEL, batch_size=batch_size)


@dataclass
class EmbeddedCorpus:
    """Real text and its normalised all-MiniLM-L6-v2 embeddings: base passages and held-out queries."""

    texts: list[str]
    vectors: np.ndarray  # (len(texts), 384) float32
    queries: list[str]
    query_vectors: np.ndarray
    seconds: float = 0.0  # embedding time when computed now, 0 when read from the cache


def embedded_corpus(count: int, queries: int, embedder: Any | None = None) -> EmbeddedCorpus:
    """Embeddings of `count` passages and `queries` held-out query texts, cached under results/cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    every = passages(count + queries)
    base, held_out = every[:count], [query_text(p) for p in every[count:]]
    key = hashlib.sha256(json.dumps([MODEL, base, held_out]).encode()).hexdigest()[:16]
    texts_file = CACHE / f"corpus-{count}-{queries}-{key}.json"
    vectors_file = CACHE / f"corpus-{count}-{queries}-{key}.npy"
    if texts_file.exists() and vectors_file.exists():
        matrix = np.load(vectors_file)
        return EmbeddedCorpus(base, matrix[:count], held_out, matrix[count:])
    embedder = embedder or load_embedder()
    started = time.perf_counter()
    vectors = []
    step = 512
    for offset in range(0, len(base), step):
        vectors.append(embedder.embed(base[offset : offset + step]))
        print(f"  embedded {min(offset + step, len(base))}/{len(base)} passages", file=sys.stderr, flush=True)
    vectors.append(embedder.embed(held_out))
    seconds = time.perf_counter() - started
    matrix = np.concatenate(vectors).astype(np.float32)
    np.save(vectors_file, matrix)
    texts_file.write_text(json.dumps({"model": MODEL, "texts": base, "queries": held_out}))
    return EmbeddedCorpus(base, matrix[:count], held_out, matrix[count:], seconds)


# -- statistics ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p95": round(percentile(ms, 95), 3),
        "mean": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


# -- load and memory ---------------------------------------------------------------------------------------


def other_cpu_seconds(started: dict[str, float]) -> float:
    """CPU seconds used by processes other than this one and its children since `started`."""
    now = cpu_snapshot()
    return round((now["machine"] - started["machine"]) - (now["tree"] - started["tree"]), 1)


def cpu_snapshot() -> dict[str, float]:
    times = psutil.cpu_times()
    machine = sum(getattr(times, name) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
    return {"machine": machine, "tree": _tree_cpu(psutil.Process())}


def _tree_cpu(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


@dataclass
class PeakRss:
    """Samples the RSS of process trees every `interval` seconds and keeps the peaks."""

    pids: dict[str, int] = field(default_factory=dict)
    interval: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def start(self) -> PeakRss:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        for name, pid in list(self.pids.items()):
            self.peaks[name] = max(self.peaks.get(name, 0), tree_rss(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()
        return {name: round(value / 2**30, 2) for name, value in self.peaks.items()}


# -- the Milvus 2.3.5 standalone server ---------------------------------------------------------------------


@contextlib.contextmanager
def milvus_server(data: Path) -> Iterator[tuple[str, int]]:
    """Start `milvus-server` (PyPI milvus 2.3.5) in this private network namespace; yield (uri, pid).

    Refuses to run unless this process sees only loopback: the server binds every interface. The start,
    stop (SIGKILL to its own process group, by id) and cleanup of /tmp/milvus are the tests' own
    (tests/integration/milvus_server.py).
    """
    from tests.integration.milvus_server import SERVER, network_isolation_problem, running_server

    problem = network_isolation_problem()
    if problem:
        raise SystemExit(f"refusing to start the Milvus server: {problem}")
    if not SERVER.exists():
        raise SystemExit(f"{SERVER} not found: .venv/bin/pip install milvus==2.3.5")
    with running_server(data) as uri:
        yield uri, _server_pid()


def _server_pid() -> int:
    """The wrapper `milvus-server` process this process started (its tree holds `milvus run`)."""
    me = psutil.Process()
    for child in me.children():
        with contextlib.suppress(psutil.Error):
            if "milvus-server" in " ".join(child.cmdline()):
                return int(child.pid)
    raise RuntimeError("milvus-server process not found among this process's children")


# -- output -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
