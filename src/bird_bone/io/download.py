"""Download one file over HTTP(S) with a size limit, an optional SHA-256 check and resume.

Hand-written on urllib (no extra dependency): the partial file ``<name>.part`` is kept between
attempts and continued with an HTTP ``Range`` request; a server that ignores Range (answers 200)
restarts it. The finished file appears under its final name only once complete and verified.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from bird_bone.errors import BirdBoneError
from bird_bone.io.atomic import sha256_file

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


class DownloadError(BirdBoneError):
    """A download failed, exceeded its size limit or did not match its checksum."""


def file_name_for(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def download(
    url: str,
    dest_dir: str | os.PathLike,
    max_bytes: int,
    sha256: str | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` into ``dest_dir`` (resuming a ``.part`` file); returns the final path."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http and https URLs can be downloaded (got '{scheme or 'none'}')")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / file_name_for(url)
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256.lower()):
        log.info("Using cached download %s", target)
        return target
    part = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for _ in range(max(1, attempts)):
        try:
            _fetch(url, part, max_bytes, timeout, progress)
            break
        except (OSError, http.client.HTTPException) as exc:  # URLError, reset, timeout, IncompleteRead
            last_error = exc
            log.warning("Download of %s interrupted (%s): resuming", url, exc)
    else:
        raise DownloadError(f"{url}: download failed after {attempts} attempts: {last_error}")
    if sha256 is not None and sha256_file(part) != sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 of the downloaded file does not match {sha256}")
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, max_bytes: int, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status == 200:
            have = 0  # the server ignored Range: start again
        elif response.status != 206:
            raise DownloadError(f"{url}: HTTP status {response.status}")
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        if expected is not None and expected > max_bytes:
            raise DownloadError(f"{url}: {expected} bytes exceed the size limit of {max_bytes} bytes")
        digest_mode = "ab" if have else "wb"
        with (
            open(part, digest_mode) as out,
            tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc="download", disable=not progress) as bar,
        ):
            written = have
            while chunk := response.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadError(f"{url}: more than the size limit of {max_bytes} bytes")
                out.write(chunk)
                bar.update(len(chunk))
        if expected is not None and written < expected:
            raise ConnectionError(f"connection closed after {written} of {expected} bytes")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
