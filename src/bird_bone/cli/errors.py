"""How bird-bone's command-line tools end on an error a user caused: one line on stderr naming the
file, field or tensor, exit status 1; the full traceback only with ``--verbose``."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback

USER_ERRORS = (ValueError, OSError, json.JSONDecodeError, subprocess.CalledProcessError)  # with BirdBoneError


def report_error(prog: str, exc: BaseException, verbose: bool = False) -> int:
    """Print ``prog: error: <one line>`` (after the traceback when ``verbose``); returns the exit status 1."""
    if verbose:
        traceback.print_exception(exc)
    if isinstance(exc, subprocess.CalledProcessError):
        detail = (exc.stderr or "").strip() if isinstance(exc.stderr, str) else ""
        message = f"{' '.join(map(str, exc.cmd))} failed with status {exc.returncode}" + (
            f": {detail}" if detail else ""
        )
    else:
        message = str(exc)
    print(f"{prog}: error: {' '.join(message.split()) or type(exc).__name__}", file=sys.stderr)
    return 1
