"""Tiny random LLaMA checkpoints on disk and calibration windows, for the streamed-method tests."""

from __future__ import annotations

import torch

from tests.conftest import make_tiny_llama


def saved_tiny_llama(tmp_path, layers: int = 3, seed: int = 0, shard: str = "20KB"):
    """A float32 tiny LLaMA (vocabulary 300) saved to ``tmp_path/source`` in several shards."""
    model = make_tiny_llama(300, layers=layers, seed=seed)
    model.save_pretrained(tmp_path / "source", max_shard_size=shard)
    return model, tmp_path / "source"


def random_windows(count: int, seed: int, length: int = 16) -> torch.Tensor:
    return torch.randint(0, 300, (count, length), generator=torch.Generator().manual_seed(seed))


def script_module(name: str):
    """``scripts/<name>.py`` imported as a module (its ``main`` called in-process)."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
