"""Parameters that do not exist, make no sense or are overridden in part (issue 17, items 2, 6, 7)."""

from __future__ import annotations

import shutil

import pytest

from bird_bone.config import HealParams, ParameterError, PruneParams, check_parameter_groups
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.pipelines import hooks
from tests.conftest import ROOT, make_tiny_llama


def base_parameters() -> dict:
    from kedro.config import OmegaConfigLoader

    return dict(OmegaConfigLoader(str(ROOT / "conf"), **hooks.CONFIG_LOADER_ARGS)["parameters"])


@pytest.fixture
def conf(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    return tmp_path / "conf"


def test_the_projects_own_parameters_pass():
    validated = check_parameter_groups(base_parameters())
    assert isinstance(validated["prune"], PruneParams) and validated["prune"].waves == 2


def test_a_misspelt_group_is_an_error_that_suggests_the_right_name():
    with pytest.raises(ParameterError, match=r"stoploss is not a known parameter group \(did you mean stop_loss\?\)"):
        check_parameter_groups({**base_parameters(), "stoploss": {"enabled": False}})


def test_a_misspelt_key_of_a_group_the_pipeline_does_not_use_is_an_error_too():
    params = base_parameters()
    with pytest.raises(ParameterError, match="novaq.codebook_sise is not a known parameter"):
        check_parameter_groups({**params, "novaq": {**params["novaq"], "codebook_sise": 8}})


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_fail_validation(value):
    with pytest.raises(ParameterError, match="heal.learning_rate.*finite"):
        HealParams.model_validate({"learning_rate": value})


def test_a_conf_local_override_of_one_key_keeps_every_other_default(conf, monkeypatch):
    from kedro.config import OmegaConfigLoader

    (conf / "local" / "parameters.yml").write_text("prune:\n  method: sparsegpt\n")
    params = OmegaConfigLoader(str(conf), **hooks.CONFIG_LOADER_ARGS)["parameters"]
    assert params["prune"]["method"] == "sparsegpt" and params["prune"]["waves"] == 2
    assert params["prune"]["structured"]["clusters"] == 8
    monkeypatch.setattr(hooks, "_WAVES", {})
    assert hooks.wave_count(conf) == 2


def test_the_session_rejects_a_misspelt_group_before_any_node(conf, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.validation.exceptions import ParameterValidationError

    project = conf.parent
    shutil.copy(ROOT / "pyproject.toml", project)
    (project / "src").mkdir()
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params={"stoploss": {"enabled": False}}) as session:
        with pytest.raises(ParameterValidationError, match="stoploss is not a known parameter group"):
            session.load_context()
    assert not (project / "data").exists() and not (project / "models").exists()


def test_command_line_n_m_values_stay_strings():
    from bird_bone.pipelines.cli import quote_ratios

    assert quote_ratios("prune.method=sparsegpt,prune.pattern=2:4,heal.kd_weight=1.0") == (
        "prune.method=sparsegpt,prune.pattern='2:4',heal.kd_weight=1.0"
    )
    assert quote_ratios("prune.pattern=unstructured") == "prune.pattern=unstructured"


def test_an_n_m_pattern_that_does_not_divide_a_width_fails_when_the_model_is_loaded():
    hook = hooks.ParameterCheckHook()
    hook._nm = PruneParams(pattern="2:5").nm
    checkpoint = Checkpoint(make_tiny_llama(300), None)
    with pytest.raises(ParameterError, match=r"prune.pattern: model.layers.0.self_attn.q_proj: .*2:5 .*32 input"):
        hook.after_node_run(node=None, outputs={"seeding.baseline_checkpoint": checkpoint})
    hook = hooks.ParameterCheckHook()
    hook._nm = PruneParams(pattern="2:4").nm
    hook.after_node_run(node=None, outputs={"seeding.baseline_checkpoint": checkpoint})  # 32 and 64 divide by 4
    assert hook._checked


def test_a_list_value_on_the_command_line_is_one_item():
    from bird_bone.pipelines.cli import split_items

    assert split_items("eval.tasks=[bird_bone_canary,arc_easy],eval.windows=2") == [
        "eval.tasks=[bird_bone_canary,arc_easy]",
        "eval.windows=2",
    ]
