"""Review artifacts of a run: weight manifests and per-commit diff bundles (diffs/<commit-sha>/).

No Kedro here: the bundle reads what a run left behind (git, the DVC cache, run directories).
"""
