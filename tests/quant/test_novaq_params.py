"""NovaqParams: defaults as issue 6 states them, ranges validated by name, and the shipped
conf/base/parameters_novaq.yml is valid."""

from __future__ import annotations

import pytest
import yaml

from bird_bone.config import NovaqParams, ParameterError
from bird_bone.quant.run import novaq_config
from tests.conftest import ROOT


def test_defaults_are_the_issue_defaults():
    params = NovaqParams()
    assert (params.subspaces, params.codebook_size, params.residual_codebook_size) == (4, 16, 4)
    assert params.outlier_threshold == 0.01
    assert novaq_config(params).index_bits_per_weight == 1.5


def test_shipped_parameters_file_validates():
    loaded = yaml.safe_load((ROOT / "conf/base/parameters_novaq.yml").read_text())
    params = NovaqParams.model_validate(loaded["novaq"])
    assert params == NovaqParams()  # the file states the defaults


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"codebook_size": 1}, r"novaq\.codebook_size must be >= 2 \(got 1\)"),
        ({"outlier_threshold": 1.5}, r"novaq\.outlier_threshold must be <= 1"),
        ({"refine": {"learning_rate": 0}}, r"novaq\.refine\.learning_rate must be > 0"),
        ({"subspace": 4}, r"novaq\.subspace is not a known parameter"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ParameterError, match=message):
        NovaqParams.model_validate(values)


def test_tile_and_hessian_parameters_reach_the_quantizer_config():
    config = novaq_config(NovaqParams(group_rows=32, group_cols=64, hessian_aware=False, percdamp=0.05))
    assert (config.group_rows, config.group_cols, config.hessian_aware, config.percdamp) == (32, 64, False, 0.05)
    assert NovaqParams().hessian_aware  # GPTVQ-style assignment is the default


def test_hessian_aware_compression_needs_calibration_windows():
    from bird_bone.quant.run import compress
    from tests.conftest import make_tiny_llama

    with pytest.raises(ValueError, match="hessian_aware needs calibration"):
        compress(make_tiny_llama(300, layers=1), NovaqParams(), calibration=None, progress=False)
