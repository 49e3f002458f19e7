"""Load calibration and evaluation text from a local file, a Hugging Face dataset, or the
embedded default, and record which text was used.

The embedded default is the Python reference documentation that ships inside every CPython
(``pydoc_data.topics``): real English prose, about 0.8 MB, present offline on any machine, so
``make run`` works where ``../shared/data`` is absent. Reports name it; its SHA-256 pins it.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from bird_bone.errors import TextLoadError

log = logging.getLogger(__name__)

EMBEDDED_TEXT = "embedded"


@dataclass
class TextSource:
    """What text was read: the spec as given, how it resolved, and its hash."""

    spec: str
    kind: str  # file | hf_dataset | embedded
    location: str
    sha256: str
    characters: int

    def to_dict(self) -> dict:
        return asdict(self)


def load_text(
    source: str,
    split: str = "test",
    column: str = "text",
    config_name: str | None = None,
    fallback: str | None = None,
) -> tuple[str, TextSource]:
    """Read ``source``: ``embedded``, a local text file, or a hub dataset id (needs a network).

    ``fallback`` is used, with a warning, when ``source`` is a local path that does not exist.
    """
    import hashlib

    source = str(source).strip()
    path = Path(source).expanduser()
    if source == EMBEDDED_TEXT:
        text, kind, location = _embedded_text(), "embedded", f"pydoc_data.topics (Python {platform.python_version()})"
    elif path.is_file():
        text, kind, location = _read_file(path), "file", str(path.resolve())
    elif _looks_like_path(source):
        if fallback:
            log.warning("Text file %s not found: using fallback '%s'", path, fallback)
            return load_text(fallback, split, column, config_name)
        raise TextLoadError(f"text file not found: {path}")
    else:
        text = _load_hf_dataset(source, config_name, split, column)
        kind, location = "hf_dataset", f"{source}/{config_name or ''}:{split}[{column}]"
    if not text.strip():
        raise TextLoadError(f"text '{source}' is empty")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text, TextSource(source, kind, location, digest, len(text))


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.endswith((".txt", ".md", ".jsonl", ".json"))
        or source.count("/") > 1
    )


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TextLoadError(f"text file {path} is not UTF-8 (byte {exc.start}): {exc.reason}") from exc
    except OSError as exc:
        raise TextLoadError(f"cannot read text file {path}: {exc.strerror}") from exc


def _embedded_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _load_hf_dataset(name: str, config_name: str | None, split: str, column: str) -> str:
    """Rows of ``column`` joined with blank lines, as the pruning papers join WikiText-2."""
    try:
        import datasets

        rows = datasets.load_dataset(name, config_name, split=split)
    except Exception as exc:  # datasets raises many types for network, missing split, bad name
        raise TextLoadError(
            f"dataset '{name}' (config {config_name!r}, split '{split}') could not be loaded: {exc}. "
            "Offline? Pass a local text file instead (data.*.source=/path/to/file.txt)"
        ) from exc
    if column not in rows.column_names:
        raise TextLoadError(f"dataset '{name}' has no column '{column}' (columns: {rows.column_names})")
    return "\n\n".join(rows[column])
