"""Compressed-model file formats (the NOVAQ directory format)."""
