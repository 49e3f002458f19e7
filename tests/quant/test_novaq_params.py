"""NovaqConfig (the ``novaq`` parameter group): defaults as issue 6 states them, ranges validated by
name, and the shipped conf/base/parameters_novaq.yml is valid."""

from __future__ import annotations

import json

import pytest
import yaml

from bird_bone.config import ParameterError
from bird_bone.quant.config import NovaqConfig, RefineConfig
from tests.conftest import ROOT


def test_defaults_are_the_issue_defaults():
    params = NovaqConfig()
    assert (params.subspaces, params.codebook_size, params.residual_codebook_size) == (4, 16, 4)
    assert params.outlier_threshold == 0.01
    assert params.index_bits_per_weight == 1.5
    assert NovaqConfig(codebook_size=17, residual_codebook_size=1).index_bits_per_weight == 5 / 4


def test_shipped_parameters_file_validates():
    loaded = yaml.safe_load((ROOT / "conf/base/parameters_novaq.yml").read_text())
    params = NovaqConfig.model_validate(loaded["novaq"])
    assert params == NovaqConfig()  # the file states the defaults


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"codebook_size": 1}, r"novaq\.codebook_size must be >= 2 \(got 1\)"),
        ({"outlier_threshold": 1.5}, r"novaq\.outlier_threshold must be <= 1"),
        ({"refine": {"learning_rate": 0}}, r"novaq\.refine\.learning_rate must be > 0"),
        ({"refine": {"learning_rate": float("inf")}}, r"novaq\.refine\.learning_rate"),
        ({"subspace": 4}, r"novaq\.subspace is not a known parameter"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ParameterError, match=message):
        NovaqConfig.model_validate(values)


def test_hessian_aware_compression_needs_calibration_windows():
    from bird_bone.quant.run import compress
    from tests.conftest import make_tiny_llama

    with pytest.raises(ValueError, match="hessian_aware needs calibration"):
        compress(make_tiny_llama(300, layers=1), NovaqConfig(), calibration=None, progress=False)


# Every parameter of the ``novaq`` group reaches its algorithm: run the Kedro stage's nodes and its
# dataset's save on a tiny model with one parameter changed from BASE, and read back, from the
# algorithm's own arguments (the real functions run, the spies only record), the value it received.
BASE = {"kmeans_iterations": 2, "kmeans_samples": 0, "refine": {"max_iterations": 1, "calibration_windows": 2,
        "window_length": 16}}  # fmt: skip
MATRIX = "model.layers.0.mlp.down_proj.weight"  # [32, 64]
CHANGES = {  # field: (value, other changes it needs to act, what the algorithm received)
    "subspaces": (2, {}, lambda r: r["gptvq"][MATRIX][4]),
    "codebook_size": (8, {}, lambda r: r["gptvq"][MATRIX][2]),
    "residual_codebook_size": (2, {}, lambda r: r["gptvq"][MATRIX][3]),
    "outlier_threshold": (0.25, {}, lambda r: r["normalize"][MATRIX]),
    "group_rows": (16, {}, lambda r: r["gptvq"][MATRIX][5]),
    "group_cols": (32, {}, lambda r: r["gptvq"][MATRIX][6]),
    "hessian_aware": (False, {}, lambda r: r["gptvq"][MATRIX][1] is not None),
    "percdamp": (0.2, {}, lambda r: r["gptvq"][MATRIX][10]),
    "kmeans_iterations": (3, {}, lambda r: r["gptvq"][MATRIX][7]),
    "kmeans_samples": (128, {}, lambda r: r["gptvq"][MATRIX][9]),
    "codebook_update_iterations": (1, {}, lambda r: r["update"][MATRIX]),
    "seed": (5, {}, lambda r: r["gptvq"][MATRIX][8]),
    "activation_aware": (True, {"hessian_aware": False}, lambda r: r["column_scale"]),
    "include_embeddings": (True, {}, lambda r: "model.embed_tokens.weight" in r["normalize"]),
    "dense_dtype": ("float32", {}, lambda r: r["manifest"]["tensors"]["model.norm.weight"]["dtype"]),
    "teacher_model": ("TEACHER", {}, lambda r: r["teacher"]),
}
REFINE_CHANGES = {
    "enabled": (False, lambda r: r["refine"] is not None),
    "max_iterations": (2, lambda r: len(r["report"]["refinement"]["losses"])),
    "learning_rate": (0.5, lambda r: r["refine"].learning_rate),
    "temperature": (2.0, lambda r: r["refine"].temperature),
    "kl_weight": (0.5, lambda r: r["refine"].kl_weight),
    "cosine_weight": (0.0, lambda r: r["refine"].cosine_weight),
    "tune_scales": (False, lambda r: r["refine"].tune_scales),
    "calibration_windows": (3, lambda r: r["calibration"][0]),
    "window_length": (12, lambda r: r["calibration"][1]),
    "batch_size": (2, lambda r: r["batch"]),
    "seed": (4, lambda r: r["refine"].seed),
}


def run_stage(tmp_path, tokenizer, values: dict, monkeypatch) -> dict:
    """The NOVAQ stage's nodes and dataset on a tiny model; what each algorithm received."""
    import bird_bone.pipelines.novaq.nodes as nodes
    import bird_bone.quant.novaq as novaq
    import bird_bone.quant.refine as refine_module
    import bird_bone.quant.run as run
    from bird_bone.config import DataParams
    from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from bird_bone.pipelines.novaq.datasets import NovaqDataset
    from tests.conftest import TINY_TEXT, make_tiny_llama

    seen: dict = {"gptvq": {}, "normalize": {}, "update": {}, "refine": None, "teacher": None, "column_scale": False}
    current = {}

    def spy(module, name, record):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            record(*args, **kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    def on_tensor(weight, config, name="weight", energy=None, hessian=None):
        current["name"] = name

    spy(novaq, "quantize_tensor", on_tensor)
    spy(novaq, "normalize", lambda w, threshold: seen["normalize"].__setitem__(current["name"], threshold))
    spy(novaq, "gptvq_quantize", lambda *a: seen["gptvq"].__setitem__(current["name"], a))
    spy(novaq, "update_codebooks", lambda q, w, h, iters, damp: seen["update"].__setitem__(current["name"], iters))
    spy(run, "refine", lambda model, q, windows, config, *a: seen.__setitem__("refine", config))
    spy(refine_module, "distillation_loss", lambda t, s, c: seen.__setitem__("batch", t.logits.shape[0]))
    spy(nodes, "load_model", lambda spec, *a, **k: seen.__setitem__("teacher", spec))
    tmp_path.mkdir()
    (tmp_path / "text.txt").write_text(TINY_TEXT * 4)
    save_checkpoint(Checkpoint(make_tiny_llama(len(tokenizer), layers=1), tokenizer), tmp_path / "base")
    if values.get("teacher_model") == "TEACHER":
        values = {**values, "teacher_model": str(tmp_path / "base")}
    checkpoint = load_checkpoint(tmp_path / "base")
    config = NovaqConfig.model_validate(values)
    text = {"source": str(tmp_path / "text.txt"), "fallback": None}
    data = DataParams.model_validate({"calibration": text, "evaluation": text})
    calibration = nodes.make_calibration_windows(checkpoint, data, config)
    artifact, report = nodes.quantize_model(checkpoint, calibration, config)
    seen["column_scale"] = any(q.column_scale is not None for q in artifact.quantized.values())
    NovaqDataset(str(tmp_path / "out.novaq")).save(artifact)
    manifest = json.loads((tmp_path / "out.novaq" / "manifest.json").read_text())
    seen.update(calibration=tuple(calibration.shape), report=report, manifest=manifest)
    if seen["teacher"] == str(tmp_path / "base"):
        seen["teacher"] = "TEACHER"
    return seen


def test_every_novaq_parameter_has_a_case():
    assert set(CHANGES) | {"refine"} == set(NovaqConfig.model_fields)
    assert set(REFINE_CHANGES) == set(RefineConfig.model_fields)


@pytest.mark.parametrize("field", [*CHANGES, *(f"refine.{k}" for k in REFINE_CHANGES)])
def test_every_novaq_parameter_reaches_its_algorithm(field, tmp_path, tiny_tokenizer, monkeypatch):
    if field.startswith("refine."):
        key = field.split(".")[1]
        value, observe = REFINE_CHANGES[key]
        default = RefineConfig.model_validate(BASE["refine"]).model_dump()[key]
        values = {**BASE, "refine": {**BASE["refine"], key: value}}
        unchanged = {**BASE, "refine": {**BASE["refine"], key: default}}
    else:
        value, needs, observe = CHANGES[field]
        default = NovaqConfig.model_validate(BASE).model_dump()[field]
        values, unchanged = {**BASE, **needs, field: value}, {**BASE, **needs, field: default}
    assert value != default  # the case changes the parameter
    before = observe(run_stage(tmp_path / "default", tiny_tokenizer, unchanged, monkeypatch))
    after = observe(run_stage(tmp_path / "changed", tiny_tokenizer, values, monkeypatch))
    assert after == value and before != after
