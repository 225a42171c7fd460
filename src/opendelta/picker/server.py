"""The picker's web server: the standard library's ThreadingHTTPServer, on 127.0.0.1 only.

Safety rules: it binds to 127.0.0.1 (never 0.0.0.0) on a random free port unless one is given; every request
that reads the model or changes anything must carry the one-time token of the printed URL (`?token=` for the
page, the `X-Picker-Token` header for the API), so other local users' processes cannot read or submit; the
Host header must name 127.0.0.1 / localhost (no DNS rebinding); API writes must be JSON (no cross-site form
posts). It stops, with every thread joined and the socket closed, on submit, cancel, timeout or Ctrl-C.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._logging import logger
from ..errors import OpenDeltaError, PickerCancelledError, PickerError, PickerTimeoutError
from .model import PickerModel

HOST = "127.0.0.1"
TOKEN_HEADER = "X-Picker-Token"
_STATIC = {"index.html": "text/html", "picker.js": "text/javascript", "picker.css": "text/css"}
_MAX_BODY = 16 * 1024 * 1024
_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread: nothing is left running
    block_on_close = True
    allow_reuse_address = False
    picker: PickerServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the page was closed mid-request: nothing to report
            logger.debug("picker: client %s went away (%s)", client_address, exc)
            return
        logger.exception("picker: error while answering %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "opendelta-picker"
    timeout = 20  # a client that stops sending cannot hold a request thread (and so the shutdown) for long

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        logger.debug("picker: " + format, *args)

    # ----- replies ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # ----- checks ---------------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        return host in (HOST, "localhost")

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.server.picker.token.encode())

    # ----- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "wrong Host header: open the page at the printed 127.0.0.1 URL")
        if url.path.startswith("/static/"):
            name = url.path[len("/static/") :]
            if name not in _STATIC:
                return self._error(HTTPStatus.NOT_FOUND, "no such file")
            return self._send(HTTPStatus.OK, _static(name), _STATIC[name])
        if url.path == "/":
            if not self._token_ok(parse_qs(url.query).get("token", [None])[0]):
                return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token: open the exact URL that was printed")
            return self._send(HTTPStatus.OK, _static("index.html"), "text/html")
        if url.path == "/api/model":
            if not self._token_ok(self.headers.get(TOKEN_HEADER)):
                return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
            return self._json(HTTPStatus.OK, self.server.picker.tree)
        return self._error(HTTPStatus.NOT_FOUND, "no such page")

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "wrong Host header")
        if not self._token_ok(self.headers.get(TOKEN_HEADER)):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            selected = body.get("selected", [])
            if not isinstance(selected, list) or not all(isinstance(s, str) for s in selected):
                raise ValueError("`selected` must be a list of module names")
        except (ValueError, AttributeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
        picker = self.server.picker
        if url.path == "/api/cancel":
            picker.finish(None)
            return self._json(HTTPStatus.OK, {"cancelled": True})
        if url.path not in ("/api/count", "/api/submit"):
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint")
        if not selected and url.path == "/api/count":
            return self._json(
                HTTPStatus.OK,
                {
                    "modules": 0,
                    "delta_parameters": 0,
                    "total": picker.model.total,
                    "share": 0.0,
                    "modified_modules": [],
                },
            )
        try:
            result = picker.model.evaluate(selected)
        except OpenDeltaError as exc:
            return self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc))
        if url.path == "/api/submit":
            picker.finish(result["modified_modules"])
            result = {**result, "submitted": True}
        return self._json(HTTPStatus.OK, result)


class PickerServer:
    """Serves the picker page for `model` until `finish()` (submit / cancel) or `close()`.

    >>> server = PickerServer(PickerModel(model, config)); server.start(); print(server.url)
    >>> names = server.wait(timeout=900)   # raises PickerCancelledError / PickerTimeoutError
    >>> server.close()
    """

    def __init__(self, model: PickerModel, port: int | None = None, token: str | None = None) -> None:
        self.model = model
        self.tree = model.tree()
        self.token = token or secrets.token_urlsafe(24)
        self._done = threading.Event()
        self._result: list[str] | None = None
        self._thread: threading.Thread | None = None
        try:
            self.httpd = _Server((HOST, int(port or 0)), _Handler)
        except OSError as exc:
            raise PickerError(
                f"Cannot listen on {HOST}:{port or 0} for the module picker ({exc.strerror or exc}); "
                f"pass another port (interactive_modify=PORT / --port) or True for a free one."
            ) from None
        self.httpd.picker = self

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def start(self) -> PickerServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"opendelta-picker-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def finish(self, result: list[str] | None) -> None:
        """Record the outcome (names, or None for cancel); the first one wins."""
        if not self._done.is_set():
            self._result = result
            self._done.set()

    def wait(self, timeout: float | None) -> list[str]:
        """Block until submit (returns the names), cancel (PickerCancelledError) or `timeout` seconds
        (PickerTimeoutError). Ctrl-C raises KeyboardInterrupt as usual; `close()` in any case."""
        if not self._done.wait(timeout):
            raise PickerTimeoutError(
                f"Nobody submitted the module picker within {timeout:g} s; run it again (and "
                f"submit on the page), or pass a longer timeout."
            )
        if self._result is None:
            raise PickerCancelledError("The module picker was cancelled on the page; nothing was attached.")
        return self._result

    def close(self) -> None:
        """Stop serving, join every thread and close the socket (idempotent)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> PickerServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
