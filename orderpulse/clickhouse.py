"""One ClickHouse interface over two engines: in-process chdb and a server.

Both speak the same SQL and move rows as JSONEachRow bytes, so the sink, the
DDL and the report run unchanged on the embedded engine and on a ClickHouse
server (via clickhouse-connect's HTTP interface).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Protocol

import orjson

from orderpulse.errors import ClickHouseError, ConfigError
from orderpulse.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouse(Protocol):
    database: str

    def command(self, sql: str) -> None: ...

    def insert_rows(self, table: str, rows: list[dict[str, Any]], *, dedup_token: str) -> None: ...

    def query_rows(self, sql: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def _json_lines(rows: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows)


def _parse_json_lines(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def _check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ConfigError(f"not a plain identifier: {name!r}")
    return name


class EmbeddedClickHouse:
    """ClickHouse in this process (chdb), data under ``path``.

    chdb allows one open session per process and locks its path, so only one
    process (the sink during a run, the report afterwards) opens it at a time.
    """

    def __init__(self, path: str, database: str) -> None:
        from chdb import session  # imported here: only the embedded mode needs it

        self.database = _check_ident(database)
        self._session = session.Session(path)

    def command(self, sql: str) -> None:
        self._run(sql)

    def insert_rows(self, table: str, rows: list[dict[str, Any]], *, dedup_token: str) -> None:
        token = dedup_token.replace("'", "")
        sql = (f"INSERT INTO {self.database}.{_check_ident(table)} "
               f"SETTINGS insert_deduplication_token='{token}' FORMAT JSONEachRow\n")
        self._run(sql + _json_lines(rows).decode())

    def query_rows(self, sql: str) -> list[dict[str, Any]]:
        return _parse_json_lines(self._run(sql, "JSONEachRow"))

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        try:
            return bytes(self._session.query(sql, fmt).bytes())
        except Exception as exc:  # chdb raises its own ChdbError/RuntimeError
            raise ClickHouseError(str(exc)[:2000]) from exc

    def close(self) -> None:
        self._session.close()


class ServerClickHouse:
    """A ClickHouse server over HTTP (clickhouse-connect)."""

    def __init__(self, settings: Settings) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

        self.database = _check_ident(settings.clickhouse_database)
        self._driver_error: type[Exception] = DriverError
        try:
            self._client = clickhouse_connect.get_client(
                dsn=settings.clickhouse_url, username=settings.clickhouse_user,
                password=settings.clickhouse_password.get_secret_value(),
                autogenerate_session_id=False,
            )
        except DriverError as exc:
            raise ClickHouseError(f"cannot connect to ClickHouse: {exc}") from exc

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except self._driver_error as exc:
            raise ClickHouseError(str(exc)[:2000]) from exc

    def insert_rows(self, table: str, rows: list[dict[str, Any]], *, dedup_token: str) -> None:
        try:
            self._client.raw_insert(
                f"{self.database}.{_check_ident(table)}", insert_block=_json_lines(rows),
                fmt="JSONEachRow", settings={"insert_deduplication_token": dedup_token},
            )
        except self._driver_error as exc:
            raise ClickHouseError(str(exc)[:2000]) from exc

    def query_rows(self, sql: str) -> list[dict[str, Any]]:
        try:
            return _parse_json_lines(self._client.raw_query(sql, fmt="JSONEachRow"))
        except self._driver_error as exc:
            raise ClickHouseError(str(exc)[:2000]) from exc

    def close(self) -> None:
        self._client.close()


def connect(settings: Settings) -> ClickHouse:
    """The engine the settings select: a server if ``CLICKHOUSE_URL`` is set, else chdb."""
    if settings.embedded_clickhouse:
        settings.chdb_path.mkdir(parents=True, exist_ok=True)
        return EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    return ServerClickHouse(settings)


def split_statements(sql: str) -> list[str]:
    """The statements of a DDL file, split at each ``;`` that ends a line.

    A server's HTTP interface runs one statement per request, so a file that
    groups related DDL is sent statement by statement. A ``;`` inside a string,
    a quoted name or a comment never splits; one outside them must end its line
    (only spaces or a ``--`` comment after it), or the file is refused rather
    than guessed at. Pieces holding only comments are dropped.
    """
    statements: list[str] = []
    start, i, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            i = _quoted_end(sql, i)
        elif sql.startswith("--", i):
            i = _line_end(sql, i)
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == ";":
            rest = sql[i + 1:_line_end(sql, i)].strip()
            if rest and not rest.startswith("--"):
                raise ConfigError(f"a ';' must end its line: {sql[max(i - 40, 0):i + 40]!r}")
            statements.append(sql[start:i])
            start = i = i + 1
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _line_end(sql: str, i: int) -> int:
    end = sql.find("\n", i)
    return len(sql) if end < 0 else end


def _quoted_end(sql: str, i: int) -> int:
    """Index just past the quoted string or name opening at ``i`` (doubled or
    backslash-escaped quotes stay inside)."""
    quote, j = sql[i], i + 1
    while j < len(sql):
        if sql[j] == "\\" or sql.startswith(quote * 2, j):  # an escaped or doubled quote
            j += 2
        elif sql[j] == quote:
            return j + 1
        else:
            j += 1
    raise ConfigError(f"unterminated {quote} quote: {sql[i:i + 60]!r}")


def _has_code(piece: str) -> bool:
    without = re.sub(r"--[^\n]*|/\*.*?\*/", "", piece, flags=re.DOTALL)
    return bool(without.strip())


def ddl_statements(database: str) -> list[str]:
    """The statements of the versioned DDL files in ``schemas/clickhouse``, in
    order, for ``database``."""
    folder = resources.files("orderpulse.schemas").joinpath("clickhouse")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    db = _check_ident(database)
    return [statement.replace("{db}", db)
            for p in files for statement in split_statements(p.read_text(encoding="utf-8"))]


def apply_ddl(client: ClickHouse) -> None:
    """Create the database, tables and views (idempotent: tables are IF NOT
    EXISTS, columns ADD ... IF NOT EXISTS, views CREATE OR REPLACE)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {client.database}")
    for statement in ddl_statements(client.database):
        client.command(statement)
