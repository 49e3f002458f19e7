"""Download one file over HTTP(S) into a cache keyed by URL, with a size limit, resume, and
verification; a file that fails any check is removed, never kept.

Hand-written on urllib (no extra dependency). Within one call a dropped connection is resumed
with ``Range`` plus ``If-Range`` carrying the validator the first response sent (a strong ETag, or
else Last-Modified): a server that sees the file changed answers 200 and the download restarts. A
206 answer is accepted only if its ``Content-Range`` starts where the partial file ends, its total
size is the one first announced and its validator is unchanged; anything else (a server that
ignores ranges or If-Range, a file changed between requests) discards the partial file and starts
again. Without a validator nothing is resumed. The finished file must have the announced size and,
when given, the SHA-256; only then does it appear under its final name,
``<16 hex of SHA-256(url)>-<file name>``, so two URLs ending in the same name are two entries.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bird_bone.errors import BirdBoneError
from bird_bone.io.atomic import sha256_file

log = logging.getLogger(__name__)
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)$")


class DownloadError(BirdBoneError):
    """A download failed, exceeded its size limit or did not match its checksum."""


class _Changed(ConnectionError):
    """The partial file no longer matches what the server serves: start again (retried)."""


@dataclass
class _Remote:
    """What the first response announced: total size and validator (for If-Range)."""

    total: int | None = None
    validator: str | None = None


def file_name_for(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def cache_name(url: str) -> str:
    """The cache entry of ``url``: keyed by the whole URL, readable by its file name."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{file_name_for(url)}"


def download(
    url: str,
    dest_dir: str | os.PathLike,
    max_bytes: int,
    sha256: str | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` into ``dest_dir`` (or reuse its verified cache entry); returns the final path."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http and https URLs can be downloaded (got '{scheme or 'none'}')")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / cache_name(url)
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256.lower()):
        log.info("Using cached download %s", target)
        return target
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)  # a partial file of an earlier run has no validator to resume with
    try:
        remote = _fetch_with_retries(url, part, max_bytes, attempts, timeout, progress)
        _verify(url, part, remote, sha256)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def _fetch_with_retries(url, part: Path, max_bytes: int, attempts: int, timeout: float, progress: bool) -> _Remote:
    remote, last_error = _Remote(), None
    for _ in range(max(1, attempts)):
        try:
            _fetch(url, part, remote, max_bytes, timeout, progress)
            return remote
        except (OSError, http.client.HTTPException) as exc:  # URLError, reset, timeout, IncompleteRead, _Changed
            last_error = exc
            log.warning("Download of %s interrupted (%s): resuming", url, exc)
    raise DownloadError(f"{url}: download failed after {attempts} attempts: {last_error}")


def _verify(url: str, part: Path, remote: _Remote, sha256: str | None) -> None:
    size = part.stat().st_size
    if remote.total is not None and size != remote.total:
        raise DownloadError(f"{url}: downloaded {size} bytes, the server announced {remote.total}")
    if sha256 is not None and sha256_file(part) != sha256.lower():
        raise DownloadError(f"{url}: SHA-256 of the downloaded file does not match {sha256}")


def _validator(headers) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range may carry (RFC 9110 sec. 13.1.5)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _restart(part: Path, remote: _Remote, why: str) -> _Changed:
    part.unlink(missing_ok=True)
    remote.total, remote.validator = None, None
    return _Changed(f"{why}: the partial file was discarded")


def _start_of(response, url: str, part: Path, remote: _Remote, have: int) -> int:
    """Where the body of ``response`` starts in the file (0: a full answer); checks a 206 answer."""
    if response.status == 200:
        length = response.headers.get("Content-Length")
        remote.total = int(length) if length is not None else None
        remote.validator = _validator(response.headers)
        return 0
    if response.status != 206 or not have:
        raise DownloadError(f"{url}: HTTP status {response.status}")
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range") or "")
    if not match or int(match[1]) != have or int(match[3]) != remote.total:
        raise _restart(part, remote, f"Content-Range {response.headers.get('Content-Range')!r} does not continue")
    if _validator(response.headers) != remote.validator:
        raise _restart(part, remote, "the file changed on the server")
    return have


def _fetch(url: str, part: Path, remote: _Remote, max_bytes: int, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    headers = {}
    if have and remote.validator:
        headers = {"Range": f"bytes={have}-", "If-Range": remote.validator}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        have = _start_of(response, url, part, remote, have if headers else 0)
        if remote.total is not None and remote.total > max_bytes:
            raise DownloadError(f"{url}: {remote.total} bytes exceed the size limit of {max_bytes} bytes")
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(
                total=remote.total, initial=have, unit="B", unit_scale=True, desc="download", disable=not progress
            ) as bar,
        ):
            written = have
            while chunk := response.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadError(f"{url}: more than the size limit of {max_bytes} bytes")
                out.write(chunk)
                bar.update(len(chunk))
        if remote.total is not None and written < remote.total:
            raise ConnectionError(f"connection closed after {written} of {remote.total} bytes")
