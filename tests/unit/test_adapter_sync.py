"""The adapter-sync sidecar without vLLM: its plan, its configuration, and its rounds against a fake.

The fake answers as vLLM 0.32 was seen to (tests/integration/test_vllm.py runs the same code against
the real server): /v1/models lists runtime adapters with `parent` set and `root` = the folder given,
loading a name twice is a 400, unloading an unknown one a 404.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem.workloads.adapter_sync import (
    Action,
    ConfigError,
    ConfiguredAdapter,
    LoadedAdapter,
    SyncError,
    VllmAdmin,
    VllmUnavailable,
    main,
    parse_adapters,
    plan_sync,
    read_config,
    run,
    sync_once,
)

URL = "http://vllm.test"


def loaded(**paths: str) -> dict[str, LoadedAdapter]:
    return {name: LoadedAdapter(name, path) for name, path in paths.items()}


# --- the plan ----------------------------------------------------------------------------------------


def test_nothing_configured_nothing_loaded_is_nothing_to_do() -> None:
    assert plan_sync([], {}) == []


def test_a_configured_adapter_not_loaded_is_loaded() -> None:
    actions = plan_sync([ConfiguredAdapter("style", "/a/style-v1", "v1")], {})
    assert actions == [Action("load", "style", "not loaded", path="/a/style-v1", version="v1")]


def test_an_adapter_loaded_from_its_folder_is_left_alone_even_unseen() -> None:
    # After a sidecar restart it has no memory of versions: the folder alone says it is current.
    assert plan_sync([ConfiguredAdapter("style", "/a/style-v1", "v1")], loaded(style="/a/style-v1")) == []
    assert plan_sync([ConfiguredAdapter("style", "/a/style-v1/", "v1")], loaded(style="/a/style-v1")) == []


def test_a_new_version_in_a_new_folder_is_reloaded() -> None:
    actions = plan_sync([ConfiguredAdapter("style", "/a/style-v2", "v2")], loaded(style="/a/style-v1"))
    assert actions == [Action("reload", "style", "loaded from /a/style-v1", path="/a/style-v2", version="v2")]


def test_a_new_version_in_the_same_folder_is_reloaded_when_the_old_one_was_seen() -> None:
    configured = [ConfiguredAdapter("style", "/a/style", "v2")]
    assert [a.op for a in plan_sync(configured, loaded(style="/a/style"), {"style": "v1"})] == ["reload"]
    assert plan_sync(configured, loaded(style="/a/style"), {"style": "v2"}) == []


def test_adapters_no_longer_configured_are_unloaded_first() -> None:
    actions = plan_sync(
        [ConfiguredAdapter("b-new", "/a/b"), ConfiguredAdapter("kept", "/a/kept")],
        loaded(zz_old="/a/zz", kept="/a/kept", a_old="/a/a"),
    )
    assert [(a.op, a.name) for a in actions] == [("unload", "a_old"), ("unload", "zz_old"), ("load", "b-new")]
    assert actions[0].reason == "not configured"


def test_the_plan_is_idempotent_once_carried_out() -> None:
    configured = [ConfiguredAdapter("x", "/a/x", "1"), ConfiguredAdapter("y", "/a/y", "3")]
    state = loaded(y="/a/y-old", gone="/a/gone")
    for action in plan_sync(configured, state):
        state.pop(action.name, None)
        if action.op != "unload":
            assert action.path is not None
            state[action.name] = LoadedAdapter(action.name, action.path)
    assert plan_sync(configured, state, {"x": "1", "y": "3"}) == []


# --- the configuration ---------------------------------------------------------------------------------


def test_adapters_are_checked() -> None:
    assert parse_adapters([{"name": "a", "path": "/p", "version": 3}]) == [ConfiguredAdapter("a", "/p", "3")]
    with pytest.raises(ConfigError, match="twice: a"):
        parse_adapters([{"name": "a", "path": "/p"}, {"name": "a", "path": "/q"}])
    with pytest.raises(ConfigError, match=r"adapters\[0\] needs"):
        parse_adapters([{"name": "a"}])
    with pytest.raises(ConfigError, match="not an object"):
        parse_adapters(["a"])


def test_the_config_the_operator_writes_is_read_and_its_sidecar_command_parses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tandem.api.v1alpha1 import HybridEndpointSpec
    from tandem.core.references import ResolvedAdapter
    from tandem.platform.kubernetes.ownership import Owner
    from tandem.platform.kubernetes.planners.hybridendpoint import plan_hybrid_endpoint
    from tandem.platform.kubernetes.settings import OperatorSettings
    from tests.manifests import example

    plan = plan_hybrid_endpoint(
        Owner("tandem.dev/v1alpha1", "HybridEndpoint", "team", "assistant", "uid-1"),
        HybridEndpointSpec.model_validate(example("HybridEndpoint")["spec"]),
        OperatorSettings(),
        [ResolvedAdapter("house-style", "pvc://adapters/handbook/hs-v1", 8, "v1")],
        [],
    )
    config_map = next(c for c in plan.children if c["kind"] == "ConfigMap")
    path = tmp_path / "gateway.json"
    path.write_text(config_map["data"]["gateway.json"])
    endpoint, adapters = read_config(path)
    assert endpoint == "team/assistant"
    assert [(a.name, a.version) for a in adapters] == [("house-style", "v1")]
    assert adapters[0].path == plan.facts.adapters[0].path  # what the operator's status checks

    vllm = next(
        c for c in plan.children if c["kind"] == "Deployment" and c["metadata"]["name"].endswith("vllm")
    )
    sidecar = next(c for c in vllm["spec"]["template"]["spec"]["containers"] if c["name"] == "adapter-sync")
    command = sidecar["command"]
    assert command[:3] == ["python", "-m", "tandem.workloads.adapter_sync"]
    with pytest.raises(SystemExit) as exit_:
        main([*command[3:], "--help"])
    assert exit_.value.code == 0
    assert "--interval" in capsys.readouterr().out


def test_an_unreadable_config_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "missing.json")
    (tmp_path / "half.json").write_text('{"adapters": [')
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "half.json")
    (tmp_path / "odd.json").write_text('{"adapters": {}}')
    with pytest.raises(ConfigError, match="not a list"):
        read_config(tmp_path / "odd.json")


# --- rounds against a fake vLLM -----------------------------------------------------------------------


class FakeVllm:
    """vLLM 0.32's model endpoints, as observed; `down` rounds refuse connections."""

    def __init__(self, down: int = 0) -> None:
        self.adapters: dict[str, str] = {}
        self.down = down
        self.calls: list[tuple[str, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down > 0:
            self.down -= 1
            raise httpx.ConnectError("connection refused", request=request)
        route = request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, route))
        if route == "/v1/models":
            base = {"id": "base", "object": "model", "root": "/models/smol", "parent": None}
            cards = [
                {"id": n, "object": "model", "root": p, "parent": "base"} for n, p in self.adapters.items()
            ]
            return httpx.Response(200, json={"object": "list", "data": [base, *cards]})
        if route == "/v1/load_lora_adapter":
            name = body["lora_name"]
            if name in self.adapters:
                return error(400, f"The lora adapter '{name}' has already been loaded.")
            self.adapters[name] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if route == "/v1/unload_lora_adapter":
            name = body["lora_name"]
            if self.adapters.pop(name, None) is None:
                return error(404, f"The lora adapter '{name}' cannot be found.")
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' removed successfully.")
        return httpx.Response(404, json={"detail": "Not Found"})

    def admin(self) -> VllmAdmin:
        return VllmAdmin(URL, transport=httpx.MockTransport(self.handle))

    def posts(self) -> list[str]:
        return [route for method, route in self.calls if method == "POST"]


def error(code: int, message: str) -> httpx.Response:
    return httpx.Response(
        code, json={"error": {"message": message, "type": "x", "param": None, "code": code}}
    )


def adapter_folder(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    return str(folder)


def test_a_round_loads_reloads_and_unloads_and_a_second_round_sends_nothing(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.adapters = {"old": "/gone/old", "style": "/gone/style-v1"}
    events: list[dict[str, Any]] = []
    versions: dict[str, str | None] = {}
    configured = [
        {"name": "style", "path": adapter_folder(tmp_path, "style-v2"), "version": "v2"},
        {"name": "facts", "path": adapter_folder(tmp_path, "facts-v1"), "version": "v1"},
    ]
    with fake.admin() as admin:
        sync_once(URL, configured, versions=versions, report=events.append, endpoint="t/e", admin=admin)
        assert fake.adapters == {"style": configured[0]["path"], "facts": configured[1]["path"]}
        assert [e["event"] for e in events] == ["adapter-unloaded", "adapter-loaded", "adapter-reloaded"]
        assert all(e["endpoint"] == "t/e" and e["component"] == "adapter-sync" for e in events)
        assert versions == {"style": "v2", "facts": "v1"}

        fake.calls.clear()
        assert sync_once(URL, configured, versions=versions, report=events.append, admin=admin) == []
        assert fake.posts() == []


def test_a_missing_folder_fails_that_adapter_only_and_keeps_the_old_version_serving(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.adapters = {"style": "/served/style-v1"}
    configured = [
        ConfiguredAdapter("style", str(tmp_path / "not-there"), "v2"),
        ConfiguredAdapter("facts", adapter_folder(tmp_path, "facts"), "v1"),
    ]
    events: list[dict[str, Any]] = []
    with fake.admin() as admin, pytest.raises(SyncError, match=r"style: .*no adapter_config\.json"):
        sync_once(URL, configured, report=events.append, admin=admin)
    assert fake.adapters == {"style": "/served/style-v1", "facts": configured[1].path}
    assert [e["event"] for e in events] == ["adapter-loaded", "adapter-reload-failed"]


def test_an_error_from_vllm_is_reported_with_its_message(tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base", "parent": None}]})
        return error(404, "Loading lora x failed: No adapter found for <path>")

    admin = VllmAdmin(URL, transport=httpx.MockTransport(handle))
    with pytest.raises(SyncError, match="HTTP 404: Loading lora x failed"):
        sync_once(URL, [ConfiguredAdapter("x", adapter_folder(tmp_path, "x"))], admin=admin)


def test_vllm_without_runtime_lora_updating_says_how_to_enable_it(tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base", "parent": None}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    admin = VllmAdmin(URL, transport=httpx.MockTransport(handle))
    with pytest.raises(SyncError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=true"):
        sync_once(URL, [ConfiguredAdapter("x", adapter_folder(tmp_path, "x"))], admin=admin)


def test_unreachable_vllm_is_its_own_error() -> None:
    admin = FakeVllm(down=1).admin()
    with pytest.raises(VllmUnavailable, match="did not list its models"):
        sync_once(URL, [], admin=admin)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def write_config(path: Path, adapters: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"endpoint": {"namespace": "t", "name": "e"}, "adapters": adapters}))
    return path


def test_once_waits_for_vllm_with_backoff_then_syncs(tmp_path: Path) -> None:
    fake, clock, events = FakeVllm(down=4), Clock(), []
    config = write_config(tmp_path / "c.json", [{"name": "a", "path": adapter_folder(tmp_path, "a")}])
    ok = run(
        config,
        URL,
        once=True,
        timeout=60,
        report=events.append,
        sleep=clock.sleep,
        clock=clock,
        transport=httpx.MockTransport(fake.handle),
    )
    assert ok and "a" in fake.adapters
    assert clock.sleeps == [1, 2, 4, 8]
    assert [e["event"] for e in events] == ["vllm-unavailable"] * 4 + ["adapter-loaded", "in-sync"]
    assert events[0]["retryInSeconds"] == 1 and events[0]["endpoint"] == "t/e"


def test_once_gives_up_after_its_timeout(tmp_path: Path) -> None:
    clock, events = Clock(), []
    config = write_config(tmp_path / "c.json", [])
    ok = run(
        config,
        URL,
        once=True,
        timeout=20,
        report=events.append,
        sleep=clock.sleep,
        clock=clock,
        transport=httpx.MockTransport(FakeVllm(down=1000).handle),
    )
    assert not ok
    assert clock.sleeps == [1, 2, 4, 8]  # the next wait (16 s) would pass the 20 s deadline
    assert "retryInSeconds" not in events[-1]


def test_the_loop_follows_the_config_as_it_changes_and_never_unloads_on_a_bad_one(tmp_path: Path) -> None:
    fake = FakeVllm()
    config = tmp_path / "gateway.json"
    v1, v2 = adapter_folder(tmp_path, "style-v1"), adapter_folder(tmp_path, "style-v2")
    steps = [
        lambda: write_config(config, [{"name": "style", "path": v1, "version": "v1"}]),
        lambda: config.write_text("{ half written"),
        lambda: write_config(config, [{"name": "style", "path": v2, "version": "v2"}]),
        lambda: write_config(config, []),
    ]
    seen: list[dict[str, str]] = []

    class Done(Exception):
        pass

    def sleep(seconds: float) -> None:
        seen.append(dict(fake.adapters))
        if not steps:
            raise Done
        steps.pop(0)()

    steps.pop(0)()
    events: list[dict[str, Any]] = []
    with pytest.raises(Done):
        run(
            config,
            URL,
            interval=5,
            report=events.append,
            sleep=sleep,
            transport=httpx.MockTransport(fake.handle),
        )
    assert seen == [{"style": v1}, {"style": v1}, {"style": v2}, {}]
    assert [e["event"] for e in events] == [
        "adapter-loaded",
        "config-unreadable",
        "adapter-reloaded",
        "in-sync",
        "adapter-unloaded",
    ]


async def test_the_status_port_says_why_an_adapter_is_not_loaded_until_a_round_loads_it(
    tmp_path: Path,
) -> None:
    """What the operator reads from each pod (tandem.platform.kubernetes.adapters.observe_pods) through
    the sidecar's real status server: each adapter's error from the last round, gone once it loads."""
    from tandem.platform.kubernetes.adapters import observe_pods
    from tandem.workloads.adapter_sync import serve_status

    fake = FakeVllm()
    problems: dict[str, str] = {}
    missing = ConfiguredAdapter("style", str(tmp_path / "style"), "v1")
    fine = ConfiguredAdapter("facts", adapter_folder(tmp_path, "facts"), "v1")
    with fake.admin() as admin:
        server = serve_status(admin, "127.0.0.1", 0, problems)
        pod = {
            "metadata": {"name": "vllm-0"},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        try:
            with pytest.raises(SyncError):
                sync_once(URL, [missing, fine], admin=admin, problems=problems)
            [seen] = (await observe_pods([pod], int(server.server_address[1]))).values()
            assert seen.loaded == {"facts": fine.path}
            assert list(seen.errors) == ["style"] and "no adapter_config.json" in seen.errors["style"]

            adapter_folder(tmp_path, "style")  # the folder appears: the next round loads it
            sync_once(URL, [missing, fine], admin=admin, problems=problems)
            [seen] = (await observe_pods([pod], int(server.server_address[1]))).values()
            assert seen.errors == {} and set(seen.loaded) == {"style", "facts"}
        finally:
            server.shutdown()
            server.server_close()
