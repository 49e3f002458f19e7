"""Model sources of the ``novaq`` command: Ollama store resolution (fake store) and URL download
with resume, size limit and checksum against a local http.server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bird_bone.errors import ModelLoadError
from bird_bone.io.download import DownloadError, cache_name, download
from bird_bone.models.ollama import resolve_ollama, split_name

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


def fake_store(root, name="smollm2", tag="135m", data=b"GGUF" + b"\0" * 60):
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 3},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root / "blobs" / f"sha256-{digest}"


def test_ollama_manifest_resolves_to_the_model_blob(tmp_path, monkeypatch):
    blob = fake_store(tmp_path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    assert resolve_ollama("smollm2:135m") == blob
    with pytest.raises(ModelLoadError, match="no manifest"):
        resolve_ollama("smollm2")  # tag defaults to latest, which is absent
    assert split_name("smollm2") == ("library", "smollm2", "latest")
    assert split_name("me/mine:q4") == ("me", "mine", "q4")
    with pytest.raises(ModelLoadError, match="not an Ollama model name"):
        split_name("../../etc:x")


def test_ollama_blob_missing_or_resized_is_reported(tmp_path):
    blob = fake_store(tmp_path)
    blob.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="manifest says 64"):
        resolve_ollama("smollm2:135m", tmp_path)
    blob.unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        resolve_ollama("smollm2:135m", tmp_path)


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD with Range support and an ETag; the first full request is cut off half-way."""

    ranges: list = []
    cut_first = True

    def do_GET(self):  # noqa: N802
        start = 0
        header = self.headers.get("Range")
        Handler.ranges.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if Handler.cut_first and not header:
            Handler.cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.ranges, Handler.cut_first = [], True
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_and_checks_sha256(server, tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = download(f"{server}/model.gguf", tmp_path, max_bytes=1 << 20, sha256=digest, progress=False)
    assert path.read_bytes() == PAYLOAD and path.name == cache_name(f"{server}/model.gguf")
    assert path.name.endswith("-model.gguf")
    assert Handler.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]  # resumed where it was cut
    assert not list(tmp_path.glob("*.part"))
    again = download(f"{server}/model.gguf", tmp_path, max_bytes=1 << 20, sha256=digest, progress=False)
    assert again == path and len(Handler.ranges) == 2  # served from the cache, no request


def test_download_size_limit_and_bad_checksum(server, tmp_path):
    with pytest.raises(DownloadError, match="exceed the size limit of 1000 bytes"):
        download(f"{server}/big.gguf", tmp_path / "a", max_bytes=1000, progress=False)
    Handler.cut_first = False
    with pytest.raises(DownloadError, match="does not match"):
        download(f"{server}/m.gguf", tmp_path / "b", max_bytes=1 << 20, sha256="0" * 64, progress=False)
    assert not list((tmp_path / "b").iterdir())  # neither the file nor its partial download is kept
