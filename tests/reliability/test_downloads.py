"""Downloads never keep a corrupt file (issue 17, items 3 and 9), against a real http.server on
127.0.0.1: a file that changes between requests, a server that ignores ranges or If-Range, one
without validators, a connection that always drops, a bad checksum; and a cache keyed by URL."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bird_bone.cli.novaq import main
from bird_bone.io.download import DownloadError, cache_name, download

pytestmark = pytest.mark.timeout(60)
OLD = bytes(range(256)) * 200  # 51,200 bytes
NEW = bytes(reversed(range(256))) * 200  # same size, other content


class Server(BaseHTTPRequestHandler):
    """One file under every path. Knobs (class attributes, reset by the fixture): ``cut`` cuts the
    next ``cut`` answers half-way; ``change_after`` serves NEW from that request on; ``honour_if_range``
    / ``honour_range`` / ``validators`` / ``offset_zero`` make it a server that behaves or does not."""

    requests: list = []
    cut, change_after, honour_if_range, honour_range, validators, offset_zero = 1, None, True, True, True, False
    bodies: dict = {}

    def _content(self) -> tuple[bytes, str]:
        if self.path in Server.bodies:
            return Server.bodies[self.path], f'"{self.path}"'
        changed = Server.change_after is not None and len(Server.requests) - 1 > Server.change_after
        return (NEW, '"new"') if changed else (OLD, '"old"')

    def do_GET(self):  # noqa: N802
        Server.requests.append(dict(self.headers))
        data, etag = self._content()
        wanted = self.headers.get("Range")
        if wanted and Server.honour_if_range and self.headers.get("If-Range") not in (None, etag):
            wanted = None  # a conforming server: the file changed, so the whole new file
        start = int(wanted.split("=")[1].rstrip("-")) if wanted and Server.honour_range else 0
        if wanted and Server.honour_range:
            self.send_response(206)
            shown = 0 if Server.offset_zero else start
            self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
            start = shown
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        if Server.validators:
            self.send_header("ETag", etag)
        self.end_headers()
        if Server.cut > 0:
            Server.cut -= 1
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Server.requests, Server.bodies = [], {}
    Server.cut, Server.change_after = 1, None
    Server.honour_if_range = Server.honour_range = Server.validators = True
    Server.offset_zero = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url, cache, **kwargs):
    return download(url, cache, max_bytes=1 << 20, timeout=5, progress=False, **kwargs)


def left_behind(cache) -> list:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".part")) if cache.exists() else []


def test_resume_sends_if_range_with_the_first_etag(server, tmp_path):
    path = fetch(f"{server}/m.gguf", tmp_path)
    assert path.read_bytes() == OLD and path.name == cache_name(f"{server}/m.gguf") and path.name.endswith("-m.gguf")
    assert Server.requests[1]["Range"] == f"bytes={len(OLD) // 2}-" and Server.requests[1]["If-Range"] == '"old"'
    assert fetch(f"{server}/m.gguf", tmp_path) == path and len(Server.requests) == 2  # cached: no request


def test_the_size_limit_is_checked_before_writing(server, tmp_path):
    with pytest.raises(DownloadError, match="exceed the size limit of 1000 bytes"):
        download(f"{server}/m.gguf", tmp_path, max_bytes=1000, timeout=5, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("honour_if_range", [True, False])
def test_a_file_changed_between_requests_is_never_spliced(server, tmp_path, honour_if_range):
    Server.change_after, Server.honour_if_range = 0, honour_if_range
    path = fetch(f"{server}/m.gguf", tmp_path)
    assert path.read_bytes() == NEW  # the whole new file, never half old + half new
    assert left_behind(tmp_path) == []


def test_a_changed_file_without_validators_is_fetched_again_whole(server, tmp_path):
    Server.change_after, Server.validators = 0, False
    path = fetch(f"{server}/m.gguf", tmp_path)
    assert path.read_bytes() == NEW and "Range" not in Server.requests[1]


def test_a_server_that_ignores_the_range_offset_is_not_appended(server, tmp_path):
    Server.offset_zero = True  # answers 206 but from byte 0
    with pytest.raises(DownloadError, match="does not continue"):
        fetch(f"{server}/m.gguf", tmp_path, attempts=2)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_ignores_ranges_restarts_cleanly(server, tmp_path):
    Server.honour_range, Server.change_after = False, 0
    assert fetch(f"{server}/m.gguf", tmp_path).read_bytes() == NEW


def test_a_connection_that_always_drops_leaves_nothing(server, tmp_path):
    Server.cut = 99
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(f"{server}/m.gguf", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_checksum_is_discarded_and_not_reused(server, tmp_path):
    Server.cut = 0
    with pytest.raises(DownloadError, match="does not match"):
        fetch(f"{server}/m.gguf", tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    digest = hashlib.sha256(OLD).hexdigest()
    assert fetch(f"{server}/m.gguf", tmp_path, sha256=digest).read_bytes() == OLD


def test_two_urls_with_the_same_file_name_are_two_cache_entries(server, tmp_path):
    Server.cut = 0
    Server.bodies = {"/a/model.gguf": b"A" * 1000, "/b/model.gguf": b"B" * 2000}
    a = fetch(f"{server}/a/model.gguf", tmp_path)
    b = fetch(f"{server}/b/model.gguf", tmp_path)
    assert a != b and a.read_bytes() == b"A" * 1000 and b.read_bytes() == b"B" * 2000
    assert len(Server.requests) == 2


def test_novaq_url_reports_a_bad_download_in_one_line(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NOVAQ_CACHE_DIR", str(tmp_path / "cache"))
    Server.cut = 99
    assert main(["url", f"{server}/m.gguf", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("novaq: error: ") and "after 3 attempts" in err and "\n" not in err
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []
