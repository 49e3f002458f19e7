"""The perplexity protocol on the real embedded model and WikiText-2 (../shared/data)."""

import pytest

from bird_bone.data.windows import evaluation_windows
from bird_bone.eval.perplexity import perplexity

pytestmark = pytest.mark.slow


def test_smollm2_wikitext2_first_8_windows_of_512(smollm2, wikitext_test_tokens):
    # Reference: 30.6 for 8 windows of 512 (text tokenized once, no BOS), Q4_1 weights dequantized.
    result = perplexity(smollm2.model, evaluation_windows(wikitext_test_tokens, 512, 8), batch_size=4)
    assert result.predicted_tokens == 8 * 511
    assert result.perplexity == pytest.approx(30.6, rel=0.03)
