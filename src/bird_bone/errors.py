"""Errors bird-bone raises for bad input: each names the file, field or tensor at fault."""


class BirdBoneError(Exception):
    """Base class: a clear, one-line problem with the user's input or environment."""


class ModelLoadError(BirdBoneError):
    """A model spec could not be resolved or loaded (missing file, bad GGUF, unreachable hub id)."""


class TextLoadError(BirdBoneError):
    """A calibration or evaluation text could not be found, read or is too short."""


class ArtifactError(BirdBoneError):
    """An artifact on disk (checkpoint, tensor collection) is missing, corrupt or inconsistent."""


class EvaluationError(BirdBoneError):
    """An evaluation could not run as asked (unknown lm-eval task, unreachable dataset...)."""
