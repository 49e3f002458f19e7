"""bird-bone: prune, heal, quantize and export open-weights language models, reversibly.

The package is a pure library (no Kedro import) plus a thin Kedro layer under
``bird_bone.pipelines``. See README.md for the two commands that set up and run it.
"""

__version__ = "0.1.0"
