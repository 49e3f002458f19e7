"""The growth-prune-heal loop as Kedro pipelines: one namespace per wave, then the loop report."""
