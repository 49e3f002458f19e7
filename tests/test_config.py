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
