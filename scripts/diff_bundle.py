"""Write the diff bundle of a commit into diffs/<commit-sha>/ (see bird_bone.bundle.writer).

python scripts/diff_bundle.py                      # HEAD against its parent
python scripts/diff_bundle.py --commit abc123 --parent v0.1.0
python scripts/diff_bundle.py --old-run runs/a --new-run runs/b   # run outputs from two directories
python scripts/diff_bundle.py --release 0.2.0      # also tag the commit v0.2.0 with the summary
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from bird_bone.bundle.sources import DirectoryFiles
from bird_bone.bundle.writer import write_bundle
from bird_bone.cli.errors import USER_ERRORS, report_error
from bird_bone.errors import BirdBoneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--parent", default=None, help="revision to compare against (default: the first parent)")
    parser.add_argument("--out", type=Path, default=None, help="bundle root (default: <repo>/diffs)")
    parser.add_argument("--old-run", type=Path, default=None, help="run directory replacing the parent's outputs")
    parser.add_argument("--new-run", type=Path, default=None, help="run directory replacing the commit's outputs")
    parser.add_argument(
        "--release",
        nargs="?",
        const="pyproject",
        default=None,
        metavar="VERSION",
        help="tag the commit v<VERSION> (default: the version in pyproject.toml)",
    )
    parser.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    args = parser.parse_args(argv)
    try:
        old_run = DirectoryFiles(args.old_run) if args.old_run else None
        new_run = DirectoryFiles(args.new_run) if args.new_run else None
        bundle = write_bundle(args.repo, args.commit, args.parent, args.out, old_run, new_run)
        print(bundle)
        if args.release:
            print(f"tagged {release(args.repo, args.commit, bundle, args.release)}")
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("diff_bundle", exc, args.verbose)
    return 0


def release(repo: Path, commit: str, bundle: Path, version: str) -> str:
    """Annotated tag v<version> on ``commit`` whose message is the bundle's summary; release.json records it."""
    if version == "pyproject":
        version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    tag = f"v{version.removeprefix('v')}"
    message = f"bird-bone {tag}\n\nDiff bundle: {bundle.name}\n\n{(bundle / 'summary.md').read_text()}"
    subprocess.run(["git", "tag", "-a", tag, commit, "-F", "-"], cwd=repo, input=message, text=True, check=True)
    (bundle / "release.json").write_text(json.dumps({"tag": tag, "version": version, "commit": bundle.name}) + "\n")
    return tag


if __name__ == "__main__":
    sys.exit(main())
