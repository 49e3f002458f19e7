"""NOVAQ stage: quantize the baseline checkpoint, write the NOVAQ directory, and evaluate it."""
