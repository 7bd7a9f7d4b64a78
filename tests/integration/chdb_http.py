"""A loopback endpoint that speaks ClickHouse's HTTP interface and runs real
ClickHouse SQL in chdb, so the clickhouse-connect path (``ServerClickHouse``)
is tested against the engine without a server or Docker.

What it implements is what clickhouse-connect sends and reads
(``clickhouse_connect/driver/_backend/httpcommon.py``, ``http_sync.py``):

- ``GET /ping`` -> ``Ok.``
- ``GET|POST /?query=...``: the statement is the ``query`` parameter, then a
  newline, then the body (a command; ``INSERT ... FORMAT JSONEachRow`` with its
  rows; a query ending in ``FORMAT <fmt>``). ``database`` picks the database,
  ``default_format`` the output format (TabSeparated), ``param_<name>`` are
  query parameters, transport parameters are consumed, and every other
  parameter is a setting, applied to that request only (``SET`` before, back
  to ``DEFAULT`` once a later request no longer asks for it) - this is how
  ``insert_deduplication_token`` arrives.
- Answers carry ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Summary`` (JSON of
  strings, as the server sends), ``X-ClickHouse-Timezone`` and, for a statement
  that produces a result, ``X-ClickHouse-Format`` (clickhouse-connect's
  ``command`` tells a result from a DDL by it). Errors are the server's: a non-2xx
  status, ``X-ClickHouse-Exception-Code`` and the exception text as the body.
- Basic auth (or ``X-ClickHouse-User``/``-Key``) is checked against the
  configured user; a mismatch is code 516, as on a server.

Not implemented: compressed request bodies other than gzip/deflate, binary
(non UTF-8) bodies, sessions (``session_id``: every request shares one chdb
session), external data, progress headers, response compression (the client
accepts an identity answer).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Parameters the HTTP layer consumes itself; never forwarded as settings.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
})
_RESULT_STATEMENT = re.compile(
    r"^\s*\(*\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN|CHECK)\b", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9]*)\s*;?\s*$", re.IGNORECASE)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ERROR_CODE = re.compile(r"Code: (\d+)")
# ClickHouse's HTTP status for a few exception codes; any other is 500.
_HTTP_STATUS = {62: 400, 27: 400, 60: 404, 81: 404, 115: 400, 516: 401}


class EndpointError(Exception):
    """A request this endpoint answers with a ClickHouse exception."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Seen:
    """One request as received (tests assert on what the client sent)."""

    method: str
    params: dict[str, str]
    sql: str


class ChdbHttpServer:
    """``with ChdbHttpServer(path) as server:`` serves ``server.url`` until exit."""

    def __init__(self, path: Path, *, user: str = "default", password: str = "") -> None:
        from chdb import session

        self._session = session.Session(str(path))
        self._credentials = (user, password)
        self._lock = threading.Lock()  # one statement (and its settings) at a time
        self._applied: dict[str, str] = {}  # settings currently SET on the session
        self._database = "default"
        self.timezone = self._run("SELECT timezone()", "TabSeparated")[0].decode().strip()
        self.requests: list[Seen] = []
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.endpoint = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ChdbHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(10)
        with self._lock:
            self._session.close()

    # --- one request ------------------------------------------------------------
    def authorize(self, headers: Any, params: dict[str, str]) -> None:
        user = headers.get("X-ClickHouse-User") or params.get("user")
        password = headers.get("X-ClickHouse-Key") or params.get("password", "")
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if (user or "default", password) != self._credentials:
            raise EndpointError(516, f"Code: 516. DB::Exception: {user}: Authentication "
                                     "failed: password is incorrect, or there is no user "
                                     "with such name. (AUTHENTICATION_FAILED)")

    def execute(self, method: str, params: dict[str, str], body: str,
                ) -> tuple[bytes, dict[str, str]]:
        """Run one request's statement; the answer's body and headers."""
        query = params.get("query", "")
        sql = f"{query}\n{body}" if query and body else query or body
        self.requests.append(Seen(method, dict(params), sql))
        if not sql.strip():
            raise EndpointError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        fmt = params.get("default_format", "TabSeparated")
        settings = {k: v for k, v in params.items()
                    if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        with self._lock:
            self._use(params.get("database") or "default")
            self._set(settings)
            data, summary = self._run(sql, fmt, query_params)
        headers = {"X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
                   "X-ClickHouse-Summary": json.dumps(summary),
                   "X-ClickHouse-Timezone": self.timezone}
        statement = _COMMENTS.sub(" ", sql)
        if _RESULT_STATEMENT.match(statement):
            embedded = _TRAILING_FORMAT.search(statement)
            headers["X-ClickHouse-Format"] = embedded.group(1) if embedded else fmt
        return data, headers

    def _use(self, database: str) -> None:
        if database != self._database:
            if not _SETTING_NAME.match(database):
                raise EndpointError(81, f"Code: 81. DB::Exception: Database {database!r} "
                                        "does not exist. (UNKNOWN_DATABASE)")
            self._run(f"USE {database}", "TabSeparated")
            self._database = database

    def _set(self, settings: dict[str, str]) -> None:
        """Make the session's changed settings exactly ``settings``."""
        for name in [n for n in self._applied if n not in settings]:
            self._run(f"SET {name} = DEFAULT", "TabSeparated")
            del self._applied[name]
        for name, value in settings.items():
            if self._applied.get(name) == value:
                continue
            if not _SETTING_NAME.match(name):
                raise EndpointError(115, f"Code: 115. DB::Exception: Unknown setting {name!r}. "
                                         "(UNKNOWN_SETTING)")
            quoted = value.replace("\\", "\\\\").replace("'", "\\'")
            self._run(f"SET {name} = '{quoted}'", "TabSeparated")
            self._applied[name] = value

    def _run(self, sql: str, fmt: str, params: dict[str, str] | None = None,
             ) -> tuple[bytes, dict[str, str]]:
        try:
            result = self._session.query(sql, fmt, params=params or None)
        except Exception as exc:  # chdb raises RuntimeError with the server's text
            match = _ERROR_CODE.search(str(exc))
            raise EndpointError(int(match.group(1)) if match else 1002, str(exc)) from exc
        summary = {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                   "written_rows": str(result.rows_written()),
                   "written_bytes": str(result.bytes_written()),
                   "elapsed_ns": str(int(result.elapsed() * 1e9))}
        return bytes(result.bytes() or b""), summary


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3's pool expects
    timeout = 30  # an idle keep-alive connection's thread ends after this

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") == "/ping":
            self._reply(200, b"Ok.\n", {})
        else:
            self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self._body())

    def _handle(self, raw: bytes) -> None:
        endpoint: ChdbHttpServer = self.server.endpoint  # type: ignore[attr-defined]
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        try:
            endpoint.authorize(self.headers, params)
            body = _decode(raw, self.headers.get("Content-Encoding"))
            data, headers = endpoint.execute(self.command, params, body)
        except EndpointError as exc:
            self._reply(_HTTP_STATUS.get(exc.code, 500), f"{exc}\n".encode(),
                        {"X-ClickHouse-Exception-Code": str(exc.code)})
            return
        self._reply(200, data, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read ``requests`` instead


def _decode(raw: bytes, encoding: str | None) -> str:
    if encoding == "gzip":
        raw = gzip.decompress(raw)
    elif encoding == "deflate":
        raw = zlib.decompress(raw)
    elif encoding not in (None, "", "identity"):
        raise EndpointError(48, f"Code: 48. DB::Exception: this test endpoint cannot read "
                                f"Content-Encoding {encoding}. (NOT_IMPLEMENTED)")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise EndpointError(48, "Code: 48. DB::Exception: this test endpoint takes UTF-8 bodies "
                                "only (JSONEachRow, TabSeparated). (NOT_IMPLEMENTED)") from exc
