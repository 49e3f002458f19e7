"""kedro-viz shows every registered pipeline and each namespace (stage, later each wave): the real
`kedro viz run` is started headless on 127.0.0.1 in its own process group, read over HTTP, and stopped."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.tiny_project import tool_env


def free_port() -> int:
    """A free port below 49152: kedro-viz refuses ports in the ephemeral range the OS hands out for port 0."""
    for port in random.sample(range(20000, 49000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-49000")


def get_json(url: str, deadline: float, server: subprocess.Popen, log):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError as exc:
            if server.poll() is not None:
                raise AssertionError(f"kedro viz exited ({server.returncode}): {log.read_text()[-3000:]}") from exc
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers; a group already gone is fine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    server.wait()


def namespaces(full_name: str) -> set[str]:
    parts = full_name.split(".")[:-1]
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


@pytest.mark.slow
def test_kedro_viz_shows_every_registered_pipeline_and_namespace(tmp_path):
    from bird_bone.pipeline_registry import register_pipelines

    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()
    port = free_port()
    log = tmp_path / "viz.log"
    out = log.open("w")
    server = subprocess.Popen(
        ["kedro", "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
        cwd=tmp_path,
        env=tool_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the finally stops the server and its children
    )
    try:
        deadline = time.monotonic() + 180
        main = get_json(f"http://127.0.0.1:{port}/api/main", deadline, server, log)
        registered = register_pipelines()
        assert {p["id"] for p in main["pipelines"]} == set(registered)
        assert "seeding" in main["modular_pipelines"]
        for name, pipeline in registered.items():
            shown = get_json(f"http://127.0.0.1:{port}/api/pipelines/{name}", deadline, server, log)
            tasks = {node["full_name"] for node in shown["nodes"] if node["type"] == "task"}
            assert tasks == {node.name for node in pipeline.nodes}, name
            expected = set().union(*(namespaces(node.name) for node in pipeline.nodes))
            assert expected <= set(shown["modular_pipelines"]), name
    finally:
        stop_group(server)
        out.close()
    assert server.poll() is not None
