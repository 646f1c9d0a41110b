"""The HTTP server of the rating web app: waitress with limits fit for a reader study.

waitress's defaults let ~100 idle TCP connections lock every rater out (its connection limit,
with idle connections kept for 120 s) and accept 1 GB request bodies. Here idle connections are
dropped after :attr:`ServerLimits.idle_timeout` seconds, the connection limit is high enough that
an idle crowd does not reach it before they time out, and request bodies are capped; the
server's own errors (e.g. a body over the cap) are JSON like the app's.
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass

import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from petctiqa.errors import RatingError

MAX_BODY_BYTES = 64 * 1024
"""The largest request body accepted (a rating is under 300 bytes)."""


@dataclass(frozen=True)
class ServerLimits:
    """waitress settings of :func:`create_server`.

    ``idle_timeout``: seconds a connection may stay silent before the server closes it (a
    browser reconnects on its next request); checked every ``cleanup_interval`` seconds.
    ``connection_limit``: open connections before new ones wait in the listen backlog (capped
    by the process's file-descriptor limit). ``max_body``: largest request body in bytes.
    """

    idle_timeout: int = 15
    cleanup_interval: int = 2
    connection_limit: int = 1000
    max_body: int = MAX_BODY_BYTES


class _JsonErrorTask(ErrorTask):
    """waitress's own error responses (body too large, malformed request) as JSON."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"error": f"{error.reason}: {error.body}"}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


def _usable_connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the file-descriptor limit would be hit first (raising the
    soft limit up to the hard one when it can)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64  # database, listening socket, logs, imports
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - 64))


def create_server(app, host: str, port: int, threads: int, limits: ServerLimits | None = None):  # noqa: ANN001, ANN201 - WSGI app, waitress server
    """A waitress server for ``app`` on ``host:port`` with :class:`ServerLimits`; call
    ``.run()`` to serve (``.effective_port`` is the bound port)."""
    limits = limits or ServerLimits()
    try:
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            channel_timeout=limits.idle_timeout,
            cleanup_interval=limits.cleanup_interval,
            connection_limit=_usable_connection_limit(limits.connection_limit),
            max_request_body_size=limits.max_body,
            # select() cannot watch descriptors above 1023; poll() can
            asyncore_use_poll=True,
        )
    except OSError as exc:  # port in use, address not on this machine, no permission
        raise RatingError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    # a host name with several addresses gives one listening server per address
    listeners = [server]
    if not hasattr(server, "channel_class"):
        listeners = list(getattr(server, "map", {}).values())
    for listener in listeners:
        if hasattr(listener, "channel_class"):
            listener.channel_class = _Channel
    return server
