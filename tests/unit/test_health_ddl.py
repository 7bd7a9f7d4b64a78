"""The DDL files split into one statement per request, carefully, and the health
views are all declared, idempotent and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orderpulse import names
from orderpulse.clickhouse import ddl_statements, split_statements
from orderpulse.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "health-metrics.md"
VIEWS = [v for k, v in vars(names).items() if k.startswith("VIEW_HEALTH_")]


def test_a_file_without_semicolons_is_one_statement() -> None:
    assert split_statements("-- note\nCREATE TABLE t (a Int8)\nENGINE = Memory\n") == [
        "-- note\nCREATE TABLE t (a Int8)\nENGINE = Memory"]


def test_splits_at_line_end_semicolons_and_drops_comment_only_pieces() -> None:
    sql = "CREATE TABLE a (x Int8) ENGINE = Memory;\n\n-- b next\nCREATE VIEW b AS SELECT 1;  \n"
    sql += "-- trailing note; with a semicolon\n"
    assert split_statements(sql) == ["CREATE TABLE a (x Int8) ENGINE = Memory",
                                     "-- b next\nCREATE VIEW b AS SELECT 1"]


def test_a_semicolon_followed_by_a_comment_still_ends_the_statement() -> None:
    assert split_statements("SELECT 1; -- one\nSELECT 2") == ["SELECT 1", "-- one\nSELECT 2"]


@pytest.mark.parametrize("inside", [
    "SELECT 'a;\nb'",  # a string spanning the line end
    "SELECT 'it''s;\n'",  # a doubled quote inside it
    "SELECT 'x\\';\n'",  # a backslash-escaped quote inside it
    "SELECT 1 AS `odd;\nname`",
    'SELECT 1 AS "odd;\nname"',
    "SELECT 1 /* a;\nb */",
    "SELECT 1 -- a;\n",
])
def test_semicolons_in_strings_names_and_comments_never_split(inside: str) -> None:
    assert split_statements(inside) == [inside.strip()]


def test_a_semicolon_in_the_middle_of_a_line_is_refused_not_guessed() -> None:
    with pytest.raises(ConfigError, match="must end its line"):
        split_statements("SELECT 1; SELECT 2\n")


def test_an_unterminated_quote_is_refused() -> None:
    with pytest.raises(ConfigError, match="unterminated"):
        split_statements("SELECT 'abc;\n")


def test_every_statement_is_idempotent_and_targets_the_database() -> None:
    statements = ddl_statements("op_x")
    for statement in statements:
        code = re.sub(r"--[^\n]*", "", statement).strip()
        assert "{db}" not in code and "op_x." in code
        assert re.match(r"CREATE TABLE IF NOT EXISTS |ALTER TABLE .*ADD COLUMN IF NOT EXISTS "
                        r"|CREATE OR REPLACE VIEW ", code, re.S), code[:80]
        assert ";" not in code.rstrip()[-1:]


def test_every_health_view_is_created_and_documented() -> None:
    created = re.findall(r"CREATE OR REPLACE VIEW op_x\.(\w+)", "\n".join(ddl_statements("op_x")))
    assert sorted(created) == sorted(VIEWS) and len(VIEWS) == 10
    docs = DOCS.read_text(encoding="utf-8")
    for view in VIEWS:
        assert f"### `{view}`" in docs, view
