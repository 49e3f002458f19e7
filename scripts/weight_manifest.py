"""Record the SHA-256 of every weight file (models/**/*.safetensors, models/**/*.gguf, masks under
data/06_models/) in the tracked manifest weights.manifest.json. A pre-commit hook: exits 1 when it
had to rewrite the manifest, so the commit stops and the updated manifest can be staged.

    python scripts/weight_manifest.py            # update; exit 1 if it changed
    python scripts/weight_manifest.py --check    # only report whether it is up to date
    python scripts/weight_manifest.py --prune    # also drop entries whose file is absent here
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bird_bone.bundle.manifest import build_manifest, read_manifest, update_manifest
from bird_bone.cli.errors import USER_ERRORS, report_error
from bird_bone.errors import BirdBoneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--manifest", type=Path, default=None, help="default: <root>/weights.manifest.json")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if out of date")
    parser.add_argument("--prune", action="store_true", help="drop entries of files absent here")
    parser.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("weight_manifest", exc, args.verbose)


def run(args: argparse.Namespace) -> int:
    manifest = args.manifest or args.root / "weights.manifest.json"
    if args.check:
        stale = read_manifest(manifest) != build_manifest(args.root, read_manifest(manifest), args.prune)
        if stale:
            print(f"{manifest} is out of date: run scripts/weight_manifest.py", file=sys.stderr)
        return int(stale)
    if update_manifest(args.root, manifest, args.prune):
        print(f"{manifest} updated: stage it (git add {manifest})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
