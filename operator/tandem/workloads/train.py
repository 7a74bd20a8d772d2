"""`python -m tandem.workloads.train --spec FILE`: train a LoRA adapter (the RayJob's entrypoint).

The spec file is a `TrainingJob` (`tandem.workloads.jobs`), which the planner writes (or `tandem up`
locally): the AdapterTraining spec, its version, local paths for the base model, the dataset and the
adapter folder, and for RAFT the knowledge base to draw passages from (with its own database,
embedding model and Milvus token). Training runs on Ray
Train workers (`TorchTrainer`; in a RayJob on the cluster KubeRay made, locally on a local Ray), or in
this process with `--no-ray`. The adapter folder is written whole or not at all, with a manifest;
an adapter whose manifest matches the inputs is not trained again.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tandem.api.v1alpha1 import AdapterTrainingSpec
from tandem.api.v1alpha1.adaptertraining import TRANSIENT_MODEL_REASONS

from . import ray_runtime
from .jobs import JobSpecError, KnowledgeBaseTarget, TrainingJob, load_job
from .model_common import adapter_digest
from .models import ModelError, prepare
from .reporting import EXIT_PERMANENT, EXIT_RETRY, emit, finish, shrink_lists
from .training import raft
from .training.dataset import DatasetError, Message, parse_jsonl, split
from .training.publish import PublishError, publish_adapter
from .training.raft import RaftExample
from .training.trainer import TrainingError, TrainingOutcome, train


class OutputError(Exception):
    reason = "OutputNotWritable"


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise OutputError(f"cannot write to the output store {directory}: {e.strerror}") from None


def read_dataset(location: str) -> bytes:
    """The dataset's bytes from a pod/local path, file://, https:// (SSRF-checked) or s3://."""
    scheme, _, rest = location.partition("://")
    if scheme in ("http", "https"):
        from .knowledge.safe_http import FetchError, fetch

        try:
            return fetch(
                location, allow_private=False, max_bytes=2_000_000_000, timeout=60, max_redirects=3
            ).data
        except FetchError as e:
            raise DatasetError(f"cannot fetch the dataset: {e}") from None
    if scheme == "s3":
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = rest.partition("/")
        try:
            body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as e:
            raise DatasetError(f"cannot read the dataset {location}: {e}") from None
        return body
    path = Path(rest if scheme == "file" else location)
    if not path.is_file():
        raise DatasetError(f"dataset {location} does not exist")
    return path.read_bytes()


def inputs_digest(spec: AdapterTrainingSpec, model_digest: str, dataset_bytes: bytes) -> str:
    """What decides the adapter: hyper-parameters, base model weights and training data."""
    digest = hashlib.sha256(json.dumps(spec.training_inputs(), sort_keys=True).encode())
    digest.update(model_digest.encode())
    digest.update(hashlib.sha256(dataset_bytes).digest())
    return digest.hexdigest()


def worker_cpus(requested: int | None, workers: int, available: float | None) -> int:
    """CPUs (and torch threads) each Ray Train worker reserves: the spec's `cpusPerWorker`, or this
    machine's cores shared among the workers when the spec gives no figure; never more than a share of
    the `available` CPUs of the Ray cluster (asking for more than it has would wait forever), at least 1.
    """
    workers = max(1, workers)
    wanted = requested if requested else (os.cpu_count() or 1) // workers
    if available is not None:
        wanted = min(wanted, int(available // workers))
    return max(1, wanted)


def _ray_train(config: dict[str, Any], workers: int, gpus: int, cpus: int | None) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray_runtime.connect(log_to_driver=True)
    # What the cluster has: a local Ray may have started with fewer CPUs than the spec asks for.
    cluster: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    available = cluster.get("CPU")
    per_worker = worker_cpus(cpus, workers, float(available) if available is not None else None)
    resources: dict[str, float] = {"CPU": per_worker, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={**config, "cpusPerWorker": per_worker},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(name=f"tandem-{config['name']}", storage_path=config["rayStorage"]),
    )
    trainer.fit()


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    # Ray sets OMP_NUM_THREADS from the reservation, but only when the environment has none: state the
    # thread count torch trains with instead of relying on that.
    torch.set_num_threads(int(config.get("cpusPerWorker") or 1))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    def report(event: dict[str, Any]) -> None:
        if rank == 0:
            emit(event)
        if event.get("stage") == "training":
            ray.train.report({k: v for k, v in event.items() if isinstance(v, int | float)})

    outcome = _train_here(config, report, rank, world, ray.train.torch.prepare_model if world > 1 else None)
    if rank == 0:
        Path(config["outcomeFile"]).write_text(json.dumps(asdict(outcome)))


def _train_here(
    config: dict[str, Any], report: Any, rank: int = 0, world: int = 1, wrap: Any = None
) -> TrainingOutcome:
    spec = AdapterTrainingSpec.model_validate(config["spec"])
    train_set: list[list[Message]] = config["train"]
    eval_set: list[list[Message]] = config["eval"]
    return train(
        spec,
        Path(config["modelPath"]),
        train_set,
        eval_set,
        Path(config["checkpointDir"]),
        Path(config["adapterDir"]),
        progress=report,
        rank=rank,
        world_size=world,
        wrap_model=wrap,
    )


def _raft_examples(
    kb: KnowledgeBaseTarget, spec: AdapterTrainingSpec, dataset: list[list[Message]]
) -> list[RaftExample]:
    from .knowledge.embedding import Embedder
    from .knowledge.targets import open_store

    assert spec.raft is not None
    store = open_store(kb)
    try:
        examples = raft.from_knowledge_base(
            store,
            Embedder(kb.embedding_model),
            dataset,
            questions=spec.raft.questions,
            template=spec.raft.question_template,
            distractors=spec.raft.distractors,
            oracle_fraction=spec.raft.oracle_fraction,
            max_examples=spec.raft.max_examples,
            seed=spec.training.seed,
        )
    except ValueError as e:
        raise DatasetError(f"RAFT: {e}") from None
    finally:
        store.close()
    emit(
        {
            "stage": "raft",
            "examples": len(examples),
            "withOracle": sum(e.oracle_position is not None for e in examples),
        }
    )
    return examples


def run(job: TrainingJob, *, use_ray: bool = True) -> dict[str, Any]:
    spec = job.spec
    if spec.method == "qlora":
        import torch

        if not torch.cuda.is_available():
            raise TrainingError(
                "QLoRANeedsGPU",
                "method qlora quantises the base model with bitsandbytes, which needs a GPU; "
                "none is visible to this worker (use method lora, or schedule on GPU nodes)",
            )
    adapter_dir = Path(job.output)
    _writable(adapter_dir.parent)
    model = prepare(
        job.base_model,
        spec.base_model.gguf_file,
        Path(job.model_cache or os.environ.get("TANDEM_MODEL_CACHE") or Path.home() / ".cache/tandem/models"),
        allow_private_networks=spec.base_model.allow_private_networks,
    )
    if not job.dataset:
        raise DatasetError("no dataset file was given (RAFT-only training needs generated questions)")
    raw = read_dataset(job.dataset)
    assert spec.dataset is not None
    examples, skipped = parse_jsonl(
        raw.decode("utf-8", errors="replace"), spec.dataset.format, spec.dataset.invalid_lines
    )
    for problem in skipped:
        emit({"stage": "dataset", "skipped": problem})
    digest = inputs_digest(spec, model.digest, raw)
    manifest_file = adapter_dir / "tandem-manifest.json"
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("inputsDigest") == digest:
            return {**manifest, "skipped": True}
        raise TrainingError(
            "VersionConflict",
            f"{adapter_dir} already holds version {job.version} trained from other inputs (the dataset "
            "changed under the same URI?); set output.version, or annotate tandem.dev/run for a new version",
        )
    if spec.raft is not None and job.raft_knowledge_base is not None:
        examples = examples + [e.messages for e in _raft_examples(job.raft_knowledge_base, spec, examples)]
    train_set, eval_set = split(examples, spec.dataset.eval_fraction, spec.training.seed)
    checkpoint_dir = adapter_dir.parent / ".checkpoints" / adapter_dir.name
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "name": job.name,
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "train": train_set,
        "eval": eval_set,
        "modelPath": str(model.path),
        "checkpointDir": str(checkpoint_dir),
        "adapterDir": str(adapter_dir),
        "outcomeFile": str(checkpoint_dir / "outcome.json"),
        "rayStorage": str(checkpoint_dir / "ray"),
    }
    emit(
        {
            "stage": "training-start",
            "examples": len(train_set),
            "evalExamples": len(eval_set),
            "baseModel": str(model.path),
        }
    )
    if use_ray:
        res = spec.resources
        _ray_train(config, res.workers, res.gpus_per_worker, res.cpus_per_worker)
        outcome = TrainingOutcome(**json.loads((checkpoint_dir / "outcome.json").read_text()))
    else:
        outcome = _train_here(config, emit)
    staging = adapter_dir.with_name(adapter_dir.name + ".partial")
    digest_of_adapter = adapter_digest(staging)
    manifest = {
        "name": job.name,
        "version": job.version,
        "inputsDigest": digest,
        "adapterDigest": digest_of_adapter,
        "baseModel": {"uri": spec.base_model.uri, "digest": model.digest},
        "datasetDigest": hashlib.sha256(raw).hexdigest(),
        "skippedLines": skipped,
        "hyperParameters": {
            "lora": spec.lora.model_dump(by_alias=True),
            "training": spec.training.model_dump(by_alias=True),
        },
        "metrics": asdict(outcome),
        "createdAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (staging / "tandem-manifest.json").write_text(json.dumps(manifest, indent=2))
    staging.rename(adapter_dir)  # the adapter appears whole, with its manifest
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {**manifest, "adapterPath": str(adapter_dir), "skipped": False}


def published(job: TrainingJob, outcome: dict[str, Any], credentials: Path | None) -> dict[str, Any]:
    """The run's result with `artifact` ({uri, manifestDigest}) once the adapter is published, when the
    spec asks for it (`spec.output.publish`); a run that found its adapter already trained publishes too
    (a publish that failed last time, or a store added since)."""
    publish = job.spec.output.publish
    if publish is None:
        return outcome
    recorded = outcome.get("adapterDigest")
    if recorded is not None and (found := adapter_digest(Path(job.output))) != recorded:
        raise PublishError(
            "AdapterChanged",
            f"{job.output} has digest {found}, not the {recorded} training recorded: its files changed "
            "since; not published",
        )
    artifact = publish_adapter(Path(job.output), publish, job.version, credentials)
    artifact.pop("adapterDigest")
    emit({"stage": "published", **artifact})
    return {**outcome, "artifact": artifact}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a LoRA adapter")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--result", help="also write the result JSON here")
    parser.add_argument("--no-ray", action="store_true", help="train in this process instead of Ray Train")
    parser.add_argument("--delete-artifacts", action="store_true", help="delete the adapter folder and exit")
    parser.add_argument(
        "--publish-credentials",
        type=Path,
        help="the mounted Secret folder of spec.output.publish.credentialsSecretRef",
    )
    args = parser.parse_args(argv)
    code = 0
    try:
        job = load_job(args.spec, TrainingJob)
        if args.delete_artifacts:
            shutil.rmtree(job.output, ignore_errors=True)
            outcome: dict[str, Any] = {"deleted": job.output}
        else:
            outcome = run(job, use_ray=not args.no_ray)
            outcome = published(job, outcome, args.publish_credentials)
    except PublishError as e:
        # The adapter is written (a retry finds it trained and only publishes); the store may answer then.
        outcome = {"error": e.reason, "message": str(e)}
        code = EXIT_RETRY if e.transient else EXIT_PERMANENT
    except ModelError as e:
        # A model store that did not answer may answer the retry; a missing or refused model will not.
        outcome = {"error": e.reason, "message": str(e)}
        code = EXIT_RETRY if e.reason in TRANSIENT_MODEL_REASONS else EXIT_PERMANENT
    except TrainingError as e:
        outcome, code = {"error": e.reason, "message": str(e)}, EXIT_PERMANENT
    except (DatasetError, OutputError, JobSpecError) as e:
        outcome, code = {"error": e.reason, "message": str(e)}, EXIT_PERMANENT
    # The operator reads this line from a termination message (4 KiB): a long list of skipped dataset
    # lines is cut there; the adapter's manifest keeps them all.
    if "skippedLines" in outcome:
        outcome = shrink_lists(
            {**outcome, "skippedLineCount": len(outcome["skippedLines"])},
            {"skippedLines": "skippedLinesTruncated"},
        )
    finish(outcome, args.result)
    return code


if __name__ == "__main__":
    sys.exit(main())
