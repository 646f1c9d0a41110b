"""The rating server on loopback under connection and body abuse (issue #18 items 5 and 6).

Every socket has a timeout and every test stops its server: nothing here can hang."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import create_app


def start_cli_server(dataset, raters: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """``collect-ratings serve`` on a free loopback port; returns the process and the links."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "petctiqa_cli.main", "collect-ratings", "serve"]
        + ["--dataset", str(dataset), "--raters", raters, "--port", "0", "--no-training"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    while not any(line.startswith("admin") for line in lines):
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise AssertionError("".join(lines))
        lines.append(line)
    links = dict(re.findall(r"^\s+(\w+)\s+(http://127\.0\.0\.1:\d+/r/\S+)", "".join(lines), re.M))
    return proc, links


def rate_once(link: str, results: dict, name: str) -> None:
    """A rater with a NEW connection: fetch the state, post one rating (5 s per request)."""
    port = int(re.search(r":(\d+)/", link).group(1))
    path = link.split(str(port), 1)[1].replace("/r/", "/api/r/")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path + "/state")
        state = json.loads(conn.getresponse().read())
        cur = state["current"]
        body = json.dumps({"image": cur["image"], "position": cur["position"], "score": 2})
        conn.request("POST", path + "/rating", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        results[name] = resp.status
        conn.close()
    except OSError as exc:  # a timeout is the failure this test is about
        results[name] = repr(exc)


def test_150_idle_connections_do_not_lock_out_5_raters(tiny_dataset):
    names = [f"r{i}" for i in range(5)]
    proc, links = start_cli_server(tiny_dataset, ",".join(names))
    port = int(re.search(r":(\d+)/", links["r0"]).group(1))
    idle = []
    try:
        for _ in range(150):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)  # let the server accept them all
        results: dict[str, object] = {}
        threads = [threading.Thread(target=rate_once, args=(links[n], results, n)) for n in names]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=15)
        elapsed = time.monotonic() - start
        assert results == dict.fromkeys(names, 201), results
        assert elapsed < 10, elapsed
    finally:
        for s in idle:
            s.close()
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture
def limited_server(tiny_dataset):
    from petctiqa.ratings.serving import ServerLimits, create_server

    study = open_study(tiny_dataset, seed=3)
    (alice,) = study.store.add_raters(["alice"])
    app = create_app(tiny_dataset, study.store, study.scale, study.images)
    limits = ServerLimits(idle_timeout=1, cleanup_interval=1)
    server = create_server(app, "127.0.0.1", 0, threads=4, limits=limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port, alice
    server.close()
    thread.join(timeout=5)
    study.store.close()


def test_idle_connections_are_closed_by_the_server(limited_server):
    port, _ = limited_server
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=8) for _ in range(20)]
    start = time.monotonic()
    try:
        for s in sockets:
            assert s.recv(1) == b""  # EOF: the server closed it
        assert time.monotonic() - start < 6
    finally:
        for s in sockets:
            s.close()


def test_a_100_mb_body_is_refused_from_its_header_as_json(limited_server):
    port, alice = limited_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST /api/r/{alice.token}/rating HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"Content-Type: application/json" in head
    assert "exceeds max_body" in json.loads(body)["error"]


def test_a_busy_port_is_a_clear_error_and_makes_no_links(tiny_dataset):
    from click.testing import CliRunner

    from petctiqa_cli.main import cli

    serve = ["collect-ratings", "serve", "--dataset", str(tiny_dataset)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, [*serve, "--raters", "amy", "--port", str(port)])
        assert result.exit_code == 2, result.output
        assert f"cannot listen on 127.0.0.1:{port}" in result.output
        assert not (tiny_dataset / "ratings.sqlite").exists()  # nothing was made
        # an existing study: the new rater is not added with a link nobody saw
        open_study(tiny_dataset).store.add_raters(["amy"])
        result = CliRunner().invoke(cli, [*serve, "--raters", "amy,ben", "--port", str(port)])
        assert result.exit_code == 2, result.output
    assert open_study(tiny_dataset).store.rater("ben") is None
