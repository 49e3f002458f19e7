import pytest

from bird_bone.config import DataParams, EvalParams, ModelParams, ParameterError


def test_defaults_and_valid_values():
    assert EvalParams.model_validate({}).windows == 8
    assert ModelParams.model_validate({"source": "/m"}).source == "/m"


@pytest.mark.parametrize(
    ("cls", "raw", "message"),
    [
        (EvalParams, {"windows": 0}, "eval.windows must be >= 1 (got 0)"),
        (EvalParams, {"window_length": "long"}, "eval.window_length: Input should be a valid integer"),
        (EvalParams, {"windowz": 3}, "eval.windowz is not a known parameter"),
        (ModelParams, {"dtype": "int3"}, "model.dtype: Input should be"),
        (DataParams, {"evaluation": {"source": "x"}}, "data.calibration is required"),
        (DataParams, {"evaluation": {}, "calibration": {"source": "x"}}, "data.evaluation.source is required"),
    ],
)
def test_errors_name_the_parameter(cls, raw, message):
    with pytest.raises(ParameterError) as info:
        cls.model_validate(raw)
    assert message in str(info.value)


def test_export_parameters_default_to_mixed_and_name_bad_values():
    import yaml

    from bird_bone.config import ExportParams
    from tests.conftest import ROOT

    assert ExportParams.model_validate({}).type == "mixed"
    shipped = yaml.safe_load((ROOT / "conf/base/parameters_export.yml").read_text())["export"]
    assert ExportParams.model_validate(shipped).type == "mixed"
    with pytest.raises(ParameterError, match=r"export\.type: Input should be 'mixed'"):
        ExportParams.model_validate({"type": "Q5_X"})
    with pytest.raises(ParameterError, match=r"export\.eval_windows must be >= 0 \(got -1\)"):
        ExportParams.model_validate({"eval_windows": -1})


def test_prune_order_accepts_true_false_and_auto_and_names_a_bad_value():
    from bird_bone.config import PruneParams

    assert PruneParams.model_validate({}).true_sequential == "auto"
    assert PruneParams.model_validate({"true_sequential": False}).true_sequential is False
    assert PruneParams.model_validate({"true_sequential": "auto"}).true_sequential == "auto"
    with pytest.raises(ParameterError, match=r"prune\.true_sequential"):
        PruneParams.model_validate({"true_sequential": "sometimes"})


def test_method_configs_live_beside_their_methods_and_config_gathers_them():
    import inspect

    import bird_bone.config as config
    from bird_bone.heal import config as heal_config
    from bird_bone.heal.qlora import micro_heal
    from bird_bone.lowrank import config as lowrank_config
    from bird_bone.params import Params
    from bird_bone.prune import config as prune_config

    assert config.PruneParams is prune_config.PruneParams and config.LowRankParams is lowrank_config.LowRankParams
    assert config.HealParams is heal_config.HealParams and config.Params is Params
    # one list of LoRA targets: the config's default is the algorithm's
    assert config.HealParams().target_modules == list(
        inspect.signature(micro_heal).parameters["target_modules"].default
    )
    with pytest.raises(ParameterError, match=r"prune\.method: Input should be 'magnitude', 'wanda', 'sparsegpt' or"):
        config.PruneParams.model_validate({"method": "obc"})
