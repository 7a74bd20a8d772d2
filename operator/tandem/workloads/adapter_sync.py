"""The adapter-sync sidecar: make the LoRA adapters vLLM serves match the endpoint's configuration.

    python -m tandem.workloads.adapter_sync --config /etc/tandem/gateway.json \
        --vllm http://127.0.0.1:8000 [--api-key-file F] [--status-port P] [--interval 5] [--once] \
        [--cache-dir /var/cache/tandem/adapters [--credentials DIR] [--insecure]]

It runs next to vLLM in every vLLM pod (and in-process for `tandem up`). The configuration is the
gateway's (`adapters`: a list of {name, path, version}), a mounted ConfigMap that the kubelet rewrites
in place when the HybridEndpoint changes, so each round reads it again. vLLM is the source of truth
for what is loaded: `/v1/models` lists each runtime adapter with `parent` set to the base model and
`root` set to the folder it was loaded from. A round then

- loads each configured adapter that is not loaded (`POST /v1/load_lora_adapter`);
- reloads one loaded from another folder (a new version normally lives in a new folder), or whose
  version this process saw change while its folder stayed the same (it was rewritten in place): unload,
  then load, since vLLM refuses a name it already serves. Requests for that adapter in between fail
  for a moment; new folders are also what keeps vLLM's prefix cache from reusing the old weights' blocks;
- unloads each adapter loaded but no longer configured.

An adapter with a `uri` (oci:// or s3://, an artifact an AdapterTraining published) is fetched into the
cache (`--cache-dir`, shared with vLLM) as `<cache>/<digest>`, its configured path, before vLLM is asked
to load it: an artifact whose files do not have the adapter's digest is deleted and never loaded (that
adapter's error; the others load), a store that does not answer is retried with the rounds' backoff.
An entry may name its store's credentials (`credentials`, a mounted Secret folder, and `insecure`): a
ServingPool's operator chooses them per adapter, for the namespaces the pool's owner granted them to.

With `--status-port`, the sidecar also answers `GET /v1/models` on that port with the adapters vLLM
lists at that moment (asked live, with the key) and, under `errors`, why the last round could not load
each adapter it failed on: the operator reports what is loaded, and why not, from there, so it needs no
vLLM key and the vLLM port admits the gateway only.

A round with nothing to do sends nothing but the GET. Every action is one JSON line on stdout. vLLM not
answering yet (it takes minutes to start) or a configuration being unreadable are retried with backoff;
an unreadable configuration never unloads anything.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from tandem.workloads.key_file import FileBearer
from tandem.workloads.reporting import emit

# vLLM requires this key on every /v1 route when the variable is set (its --api-key, kept off the command
# line where `ps` and the pod spec would show it): only the gateway and the adapter sync hold it.
VLLM_API_KEY_ENV = "VLLM_API_KEY"

Report = Callable[[dict[str, Any]], None]
MAX_BACKOFF = 30.0  # seconds between attempts while vLLM is down (or longer, if the interval is)
MAX_PROBLEM = 500  # characters of an adapter's error served on the status port (and so in status)


class SyncError(Exception):
    """A round could not finish; the adapters already handled stay as they are."""


class VllmUnavailable(SyncError):
    """vLLM did not answer /v1/models (not started yet, restarting, or gone)."""


class ConfigError(SyncError):
    """The configuration file is missing or not what the operator writes."""


@dataclass(frozen=True)
class ConfiguredAdapter:
    name: str
    path: str
    version: str | None = None
    digest: str | None = None  # what training recorded (adapterDigest): checked before vLLM loads it
    uri: str | None = None  # oci:// or s3://: fetched into `path` (the cache's folder for `digest`) first
    # A ServingPool's store for this adapter (its mounted Secret folder), chosen by the operator; None: the
    # sidecar's own --credentials, or anonymous.
    credentials: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class LoadedAdapter:
    name: str
    path: str  # `root` in /v1/models: the folder vLLM loaded it from


@dataclass(frozen=True)
class Action:
    op: Literal["load", "reload", "unload"]  # reload = unload, then load from `path`
    name: str
    reason: str
    path: str | None = None
    version: str | None = None
    digest: str | None = None
    uri: str | None = None
    credentials: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Outcome:
    action: Action
    error: str | None = None


def _same_path(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def plan_sync(
    configured: Sequence[ConfiguredAdapter],
    loaded: Mapping[str, LoadedAdapter],
    versions: Mapping[str, str | None] | None = None,
) -> list[Action]:
    """What to do to serve exactly `configured`, given what vLLM has `loaded` (by name).

    `versions` holds the version this process last saw serving for each adapter; it tells apart a
    folder rewritten in place, which vLLM cannot see (an adapter absent from it is taken as current).
    Unloads come first: they free memory before new weights are read.
    """
    seen = versions or {}
    wanted = {a.name: a for a in configured}
    actions = [
        Action("unload", name, "not configured", path=loaded[name].path)
        for name in sorted(loaded)
        if name not in wanted
    ]
    for name in sorted(wanted):
        adapter = wanted[name]
        current = loaded.get(name)
        if current is None:
            reason = "not loaded"
        elif not _same_path(current.path, adapter.path):
            reason = f"loaded from {current.path}"
        elif name in seen and seen[name] != adapter.version:
            reason = f"version {seen[name]} rewritten in place"
        else:
            continue
        op: Literal["load", "reload"] = "load" if current is None else "reload"
        actions.append(
            Action(
                op,
                name,
                reason,
                path=adapter.path,
                version=adapter.version,
                digest=adapter.digest,
                uri=adapter.uri,
                credentials=adapter.credentials,
                insecure=adapter.insecure,
            )
        )
    return actions


def parse_adapters(entries: Iterable[Any]) -> list[ConfiguredAdapter]:
    """The `adapters` of a gateway configuration, checked: names unique, each with a path."""
    adapters: list[ConfiguredAdapter] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"adapters[{i}] is not an object")
        name, path, version = entry.get("name"), entry.get("path"), entry.get("version")
        digest, uri = entry.get("digest"), entry.get("uri")
        credentials, insecure = entry.get("credentials"), entry.get("insecure", False)
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise ConfigError(f"adapters[{i}] needs a non-empty name and path, got {dict(entry)!r}")
        for field_, value in (("digest", digest), ("uri", uri), ("credentials", credentials)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"adapters[{i}].{field_} is not a string")
        if not isinstance(insecure, bool):
            raise ConfigError(f"adapters[{i}].insecure is not a boolean")
        adapters.append(
            ConfiguredAdapter(
                name,
                path,
                None if version is None else str(version),
                digest,
                uri or None,
                credentials or None,
                insecure,
            )
        )
    names = [a.name for a in adapters]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"adapter names appear twice: {', '.join(duplicates)}")
    return adapters


def read_config(path: Path) -> tuple[str, list[ConfiguredAdapter]]:
    """The endpoint (`namespace/name`, for the logs) and its adapters, from the gateway configuration.

    The kubelet swaps a ConfigMap's files by renaming a symlink, so a read sees the old or the new file.
    """
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    endpoint = config.get("endpoint") or {}
    label = f"{endpoint.get('namespace', '?')}/{endpoint.get('name', '?')}" if endpoint else str(path)
    entries = config.get("adapters", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: adapters is not a list")
    return label, parse_adapters(entries)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message") or error
        if message:
            return f"HTTP {response.status_code}: {message}"
    return f"HTTP {response.status_code}: {str(body)[:500]}"


class VllmAdmin:
    """vLLM's model endpoints: list, load and unload LoRA adapters (synchronous, with timeouts)."""

    def __init__(
        self,
        url: str,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
        api_key_file: Path | None = None,
    ) -> None:
        # vLLM's /v1 routes take its API key (issue 15, item 1): from a file (a pod's mounted Secret, read
        # again when rotated), given, or the VLLM_API_KEY vLLM itself reads (local mode); never an argument.
        key = api_key if api_key is not None else os.environ.get(VLLM_API_KEY_ENV)
        # Loading reads and checks the adapter's weights in the engine: seconds, more on a busy machine.
        self.client = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=5),
            transport=transport,
            headers={"Authorization": f"Bearer {key}"} if key and api_key_file is None else None,
            auth=FileBearer(api_key_file) if api_key_file is not None else None,
        )

    def models(self) -> list[dict[str, Any]]:
        try:
            response = self.client.get("/v1/models", timeout=10)
            response.raise_for_status()
            data = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise VllmUnavailable(
                f"vLLM at {self.client.base_url} did not list its models: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(data, list):
            raise VllmUnavailable(f"vLLM at {self.client.base_url}: /v1/models data is not a list")
        return data

    def loaded_adapters(self) -> list[LoadedAdapter]:
        """The runtime LoRA adapters: the entries of /v1/models with a `parent` (the base model has none)."""
        return [
            LoadedAdapter(str(m["id"]), str(m.get("root") or ""))
            for m in self.models()
            if isinstance(m, dict) and m.get("parent")
        ]

    def load(self, name: str, path: str) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def unload(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name}, missing_ok=True)

    def _post(self, route: str, body: dict[str, str], missing_ok: bool = False) -> None:
        try:
            response = self.client.post(route, json=body)
        except httpx.HTTPError as e:
            raise VllmUnavailable(f"{route}: {type(e).__name__}: {e}") from None
        if response.status_code == 404 and "lora" not in response.text.lower():
            # FastAPI's own 404: the route is only there with runtime LoRA updating switched on.
            raise SyncError(
                f"{route} is not served: start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true"
            )
        if response.status_code == 404 and missing_ok:
            return  # vLLM does not know the adapter: already gone
        if response.status_code != 200:
            raise SyncError(f"{route}: {_error_message(response)}")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> VllmAdmin:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_folder(path: str, digest: str | None = None) -> str | None:
    """Why vLLM must not load the adapter in `path` (it shares this container's mounts), or None: not an
    adapter, or not the adapter training wrote (its files changed since: a digest that does not match)."""
    if not (Path(path) / "adapter_config.json").is_file():
        return f"{path} holds no adapter_config.json (not a PEFT adapter, or not mounted here)"
    if digest is not None:
        from .model_common import adapter_digest

        found = adapter_digest(Path(path))
        if found != digest:
            return (
                f"{path} is not the adapter its training wrote (digest {found[:16]}..., expected "
                f"{digest[:16]}...): refused, not loaded"
            )
    return None


class StoreUnavailable(SyncError):
    """An adapter's store did not answer (or answered with a server error): the round is tried again."""


class Fetcher:
    """Fetches adapters from oci:// and s3:// stores into the cache vLLM reads (`cache_dir/<digest>`),
    each verified against its digest (`tandem.workloads.artifacts.fetch`). The credentials folder (a
    mounted Secret) is read on each fetch, so a rotated Secret is used without a restart. An artifact
    pinned by its manifest digest that was refused for its content (another adapter, unsafe, too large)
    is not downloaded again: its content cannot change; a tag may be moved to another artifact, and a
    denied access or a missing artifact may be fixed, so those are tried again."""

    def __init__(self, cache_dir: Path, credentials: Path | None = None, *, insecure: bool = False) -> None:
        self.cache_dir, self.credentials, self.insecure = cache_dir, credentials, insecure
        self.refused: dict[tuple[str, str], str] = {}

    def fetch(
        self, uri: str, digest: str, credentials: Path | None = None, *, insecure: bool = False
    ) -> Path:
        """The adapter's folder in the cache; SyncError saying why not (StoreUnavailable: try again).
        `credentials` (with its `insecure`): this adapter's store, instead of the fetcher's own."""
        from .artifacts import (
            ArtifactDigestMismatch,
            ArtifactError,
            ArtifactInvalid,
            ArtifactTooLarge,
            Credentials,
            fetch,
        )

        if (uri, digest) in self.refused:
            raise SyncError(self.refused[(uri, digest)])
        if credentials is None:
            credentials, insecure = self.credentials, self.insecure
        try:
            found = (
                Credentials.from_folder(credentials, insecure=insecure)
                if credentials is not None
                else Credentials(insecure=insecure)
            )
        except (OSError, ValueError) as e:
            raise SyncError(f"store credentials: {e}") from None
        if credentials is not None and found == Credentials(insecure=insecure):
            # An optional Secret volume that is not there yet: an empty folder, not an anonymous pull.
            raise SyncError(
                f"{uri}: store credentials: {credentials} holds none of the store keys (username and "
                "password, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY): is its Secret there? Not loaded"
            )
        try:
            return fetch(uri, digest, self.cache_dir, found)
        except ValueError as e:  # a URI or digest that names nothing
            raise SyncError(f"{uri}: {e}") from None
        except ArtifactError as e:
            if e.transient:
                raise StoreUnavailable(f"{uri}: {e.reason}: {e}") from None
            error = f"{uri}: {e.reason}: {e}; not loaded"
            # What its content is cannot change under a pinned URI; access or presence can.
            content = (ArtifactDigestMismatch, ArtifactInvalid, ArtifactTooLarge)
            if "@sha256:" in uri and isinstance(e, content):
                self.refused[(uri, digest)] = error
            raise SyncError(error) from None

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Delete the cache's adapter folders other than those of the digests in `keep` (the adapters
        configured now): an emptyDir holds every version ever fetched otherwise. vLLM has read a loaded
        adapter's files already; one configured again is fetched again. Returns the digests deleted."""
        import shutil

        wanted = set(keep)
        if not self.cache_dir.is_dir():
            return []
        gone = []
        for folder in self.cache_dir.iterdir():
            if folder.is_dir() and len(folder.name) == 64 and folder.name not in wanted:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder.name)
        return sorted(gone)


def _fetched(action: Action, fetcher: Fetcher | None) -> str | None:
    """Why the adapter of `action` cannot be loaded from its store into its path, or None once it is
    there: fetched into the cache, its digest checked. Raises SyncError when the fetch failed
    (StoreUnavailable: the store did not answer)."""
    if action.uri is None:
        return None
    if action.digest is None:
        return f"{action.uri}: no digest to verify it against; not fetched, not loaded"
    if fetcher is None:
        return f"{action.uri}: this adapter sync has no adapter cache (--cache-dir); not fetched"
    assert action.path is not None
    store = Path(action.credentials) if action.credentials else None
    folder = fetcher.fetch(action.uri, action.digest, store, insecure=action.insecure)  # SyncError: its error
    if not _same_path(str(folder), action.path):
        return f"{action.uri} was fetched to {folder}, not to its configured path {action.path}; not loaded"
    return None


def execute(
    admin: VllmAdmin,
    actions: Sequence[Action],
    report: Report | None = None,
    endpoint: str = "",
    fetcher: Fetcher | None = None,
) -> list[Outcome]:
    """Carry out `actions` in order, each one reported; a failed action does not stop the others.

    A reload whose new folder is missing keeps the old weights serving rather than unloading them.
    vLLM becoming unreachable midway raises VllmUnavailable: the next round starts from a fresh list.
    """
    outcomes: list[Outcome] = []
    for action in actions:
        started = time.monotonic()
        error: str | None = None
        try:
            if action.op == "unload":
                admin.unload(action.name)
            else:
                assert action.path is not None
                error = _fetched(action, fetcher) or _check_folder(action.path, action.digest)
                if error is None:
                    if action.op == "reload":
                        admin.unload(action.name)
                    admin.load(action.name, action.path)
        except VllmUnavailable:
            raise
        except SyncError as e:  # StoreUnavailable too: this adapter waits for the next round
            error = str(e)
        outcomes.append(Outcome(action, error))
        if report is not None:
            event: dict[str, Any] = {
                "component": "adapter-sync",
                "event": f"adapter-{action.op}" + ("-failed" if error else "ed"),
                "adapter": action.name,
                "path": action.path,
                "version": action.version,
                "reason": action.reason,
                "seconds": round(time.monotonic() - started, 3),
            }
            if endpoint:
                event["endpoint"] = endpoint
            if error:
                event["error"] = error
            report(event)
    return outcomes


def sync_once(
    vllm_url: str,
    adapters: Sequence[ConfiguredAdapter | Mapping[str, Any]],
    *,
    versions: MutableMapping[str, str | None] | None = None,
    report: Report | None = None,
    endpoint: str = "",
    admin: VllmAdmin | None = None,
    fetcher: Fetcher | None = None,
    problems: MutableMapping[str, str] | None = None,
) -> list[Outcome]:
    """One round: read what vLLM serves, plan, act. Raises SyncError if any action failed.

    `problems` (kept by the caller, served on the status port) is set to this round's errors by adapter:
    what the operator reports as the reason an adapter is not loaded.

    `report` receives one event per action (the sidecar prints them as JSON lines). `versions` (kept
    by the caller between rounds) is updated with the version now serving per name. `fetcher` brings
    adapters with a `uri` into the cache first (without one, such an adapter is not loaded).
    """
    wanted = parse_adapters(asdict(a) if isinstance(a, ConfiguredAdapter) else a for a in adapters)
    seen = versions if versions is not None else {}
    own = admin is None
    client = admin or VllmAdmin(vllm_url)
    try:
        loaded = {a.name: a for a in client.loaded_adapters()}
        outcomes = execute(client, plan_sync(wanted, loaded, seen), report, endpoint, fetcher)
    finally:
        if own:
            client.close()
    failed = {o.action.name for o in outcomes if o.error}
    if problems is not None:  # replaced key by key: the status server reads it meanwhile, never empty
        now = {o.action.name: o.error[:MAX_PROBLEM] for o in outcomes if o.error}
        for name in [n for n in problems if n not in now]:
            del problems[name]
        problems.update(now)
    if fetcher is not None and not failed:
        # Only after a round that left vLLM serving exactly the configuration (a failed reload keeps the
        # old version serving: its folder stays until the new one is in).
        for gone in fetcher.prune(a.digest for a in wanted if a.uri and a.digest):
            if report is not None:
                report({"component": "adapter-sync", "event": "cache-pruned", "digest": gone})
    for name in [n for n in seen if n not in {a.name for a in wanted}]:
        del seen[name]
    for adapter in wanted:
        if adapter.name not in failed:
            seen[adapter.name] = adapter.version
    if failed:
        errors = "; ".join(f"{o.action.name}: {o.error}" for o in outcomes if o.error)
        raise SyncError(f"{len(failed)} adapter(s) not in sync: {errors}")
    return outcomes


def run(
    config: Path,
    vllm_url: str,
    *,
    interval: float = 5.0,
    once: bool = False,
    timeout: float = 600.0,
    report: Report = emit,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    transport: httpx.BaseTransport | None = None,
    api_key_file: Path | None = None,
    fetcher: Fetcher | None = None,
    problems: MutableMapping[str, str] | None = None,
) -> bool:
    """Sync every `interval` seconds, forever; with `once`, until one round succeeds or `timeout` passes.

    Failed rounds are retried after 1, 2, 4, ... seconds (at most max(interval, 30)). Returns whether
    the last round succeeded (only ever returns with `once`).
    """
    versions: dict[str, str | None] = {}
    failures = 0
    deadline = clock() + timeout
    with VllmAdmin(vllm_url, transport=transport, api_key_file=api_key_file) as admin:
        while True:
            endpoint = str(config)
            try:
                endpoint, adapters = read_config(config)
                sync_once(
                    vllm_url,
                    adapters,
                    versions=versions,
                    report=report,
                    endpoint=endpoint,
                    admin=admin,
                    fetcher=fetcher,
                    problems=problems,
                )
            except SyncError as e:
                failures += 1
                delay = min(2.0 ** (failures - 1), max(interval, MAX_BACKOFF))
                if once and clock() + delay > deadline:
                    report(_problem(e, endpoint, None))
                    return False
                report(_problem(e, endpoint, delay))
                sleep(delay)
                continue
            if failures:
                report({"component": "adapter-sync", "event": "in-sync", "endpoint": endpoint})
            failures = 0
            if once:
                return True
            sleep(interval)


def _problem(error: SyncError, endpoint: str, retry_in: float | None) -> dict[str, Any]:
    kind = {VllmUnavailable: "vllm-unavailable", ConfigError: "config-unreadable"}.get(
        type(error), "sync-failed"
    )
    event: dict[str, Any] = {
        "component": "adapter-sync",
        "event": kind,
        "endpoint": endpoint,
        "error": str(error),
    }
    if retry_in is not None:
        event["retryInSeconds"] = retry_in
    return event


def serve_status(
    admin: VllmAdmin, host: str, port: int, problems: Mapping[str, str] | None = None
) -> ThreadingHTTPServer:
    """Answer `GET /v1/models` on host:port with the adapters vLLM lists now (its /v1/models entries
    that have a parent), in vLLM's own shape, and `errors`: why the last round could not load each adapter
    it failed on (`problems`, as sync_once keeps them); 503 while vLLM does not answer. Nothing else is
    served: whoever reaches this port learns which adapters are loaded or failing, and can neither
    generate nor load."""
    lock = threading.Lock()  # one httpx.Client, requests from the server's threads

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self._reply(404, {"error": "only GET /v1/models is served here"})
                return
            try:
                with lock:
                    models = admin.models()
            except VllmUnavailable:
                self._reply(503, {"error": "vLLM does not answer"})
                return
            adapters = [m for m in models if isinstance(m, dict) and m.get("parent")]
            errors = dict(problems or {})  # a copy: the sync loop replaces its content each round
            self._reply(200, {"object": "list", "data": adapters, "errors": errors})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the operator polls every reconcile: no line per poll

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="adapter-status", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep vLLM's LoRA adapters in line with the endpoint config")
    parser.add_argument("--config", required=True, type=Path, help="the gateway configuration (JSON)")
    parser.add_argument("--vllm", required=True, help="vLLM's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--once", action="store_true", help="one successful round, then exit")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="with --once: give up after this many seconds"
    )
    parser.add_argument(
        "--api-key-file", type=Path, help="vLLM's key (a mounted Secret), read again when it changes"
    )
    parser.add_argument("--status-port", type=int, help="serve GET /v1/models (the adapters loaded) here")
    parser.add_argument("--status-host", default="127.0.0.1", help="where --status-port listens")
    parser.add_argument(
        "--cache-dir", type=Path, help="where adapters with a uri are fetched to (vLLM reads them there)"
    )
    parser.add_argument(
        "--credentials", type=Path, help="the adapter store's credentials (a mounted Secret folder)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="fetch over plain HTTP from a store not on loopback"
    )
    args = parser.parse_args(argv)
    if (args.credentials or args.insecure) and args.cache_dir is None:
        parser.error("--credentials and --insecure are for fetching adapters: give --cache-dir")
    fetcher = Fetcher(args.cache_dir, args.credentials, insecure=args.insecure) if args.cache_dir else None
    problems: dict[str, str] = {}
    if args.status_port is not None:
        serve_status(
            VllmAdmin(args.vllm, timeout=10, api_key_file=args.api_key_file),
            args.status_host,
            args.status_port,
            problems,
        )
    try:
        ok = run(
            args.config,
            args.vllm,
            interval=args.interval,
            once=args.once,
            timeout=args.timeout,
            api_key_file=args.api_key_file,
            fetcher=fetcher,
            problems=problems,
        )
    except KeyboardInterrupt:
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
