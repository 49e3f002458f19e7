#!/usr/bin/env bash
# Install bird-bone's git hooks in this clone:
#   pre-commit  : the hooks of .pre-commit-config.yaml (ruff, mdformat, nbstripout, weight manifest);
#   post-commit : writes the diff bundle diffs/<sha>/ of every new commit (scripts/diff_bundle.py);
#   nbdime      : git diff / merge drivers for notebooks (with .gitattributes).
# Uses the project's .venv (make setup). Remove .git/hooks/post-commit to stop the bundles.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
VENV_BIN="${VENV_BIN:-$PWD/.venv/bin}"
"$VENV_BIN/pre-commit" install
"$VENV_BIN/nbdime" config-git --enable
hooks="$(git rev-parse --git-path hooks)"
cat > "$hooks/post-commit" <<HOOK
#!/usr/bin/env bash
# bird-bone: write diffs/<sha>/ for the new commit; never blocks the commit.
cd "\$(git rev-parse --show-toplevel)"
PYTHONPATH=src "$VENV_BIN/python" scripts/diff_bundle.py >/dev/null 2>.git/diff-bundle.log \
  || echo "bird-bone: diff bundle failed, see .git/diff-bundle.log" >&2
HOOK
chmod +x "$hooks/post-commit"
echo "installed: pre-commit, post-commit (diff bundles), nbdime git drivers"
