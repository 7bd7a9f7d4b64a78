#!/bin/bash
# Runs once, on an empty ClickHouse volume (the clickhouse-server image's initdb hook), as the
# admin the image created from CLICKHOUSE_USER / CLICKHOUSE_PASSWORD_FILE.
#
# Least privilege:
#   admin              everything; used only by `orderpulse migrate` (DDL)
#   orderpulse_sink    INSERT on the database, nothing else (the sink runs with ORDERPULSE_APPLY_DDL=false)
#   orderpulse_reader  SELECT on the database, readonly = 1 (Grafana, reports, analysts),
#                      except the dead letters' original bytes: raw deliveries carry clear PII
#
# tests/unit/test_compose.py reads the SQL below: keep one statement per user and grant.
set -euo pipefail

db=${CLICKHOUSE_DB:-orderpulse}

# The users are created with the password's SHA-256, so no password text enters the SQL (or
# the query log) and a password may hold any character. Trailing newlines of the file are
# dropped, as orderpulse and Grafana drop them.
password_sha256() {
  printf '%s' "$(cat "/run/secrets/$1")" | sha256sum | cut -d' ' -f1
}
sink_sha256=$(password_sha256 clickhouse_sink_password)
reader_sha256=$(password_sha256 clickhouse_reader_password)

# max_execution_time stays settable for the reader: Grafana's ClickHouse plugin sends its
# query timeout with every query, and readonly = 1 refuses any other setting.
clickhouse client --user "$CLICKHOUSE_USER" --password "$(cat "$CLICKHOUSE_PASSWORD_FILE")" --multiquery <<SQL
CREATE USER IF NOT EXISTS orderpulse_sink IDENTIFIED WITH sha256_hash BY '${sink_sha256}' DEFAULT DATABASE ${db};
GRANT INSERT ON ${db}.* TO orderpulse_sink;
CREATE USER IF NOT EXISTS orderpulse_reader IDENTIFIED WITH sha256_hash BY '${reader_sha256}' DEFAULT DATABASE ${db} SETTINGS readonly = 1, max_execution_time = 60 MAX 300 CHANGEABLE_IN_READONLY;
GRANT SELECT ON ${db}.* TO orderpulse_reader;
REVOKE SELECT(original_key_b64, original_value_b64) ON ${db}.dead_letters FROM orderpulse_reader;
SQL
