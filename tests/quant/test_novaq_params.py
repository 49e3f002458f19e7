"""NovaqConfig (the ``novaq`` parameter group): defaults as issue 6 states them, ranges validated by
name, and the shipped conf/base/parameters_novaq.yml is valid."""

from __future__ import annotations

import pytest
import yaml

from bird_bone.config import ParameterError
from bird_bone.quant.config import NovaqConfig
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
