#!/bin/bash
# Runs once on an empty ClickHouse volume (clickhouse-server image's initdb hook).
# Least privilege: the sink may only insert; dashboards may only read.
set -euo pipefail
sink_pw=$(cat /run/secrets/clickhouse_sink_password)
reader_pw=$(cat /run/secrets/clickhouse_reader_password)
clickhouse client --user "$CLICKHOUSE_USER" --password "$(cat "$CLICKHOUSE_PASSWORD_FILE")" -n <<SQL
CREATE DATABASE IF NOT EXISTS orderpulse;
CREATE USER IF NOT EXISTS orderpulse_sink IDENTIFIED WITH sha256_password BY '${sink_pw}';
GRANT INSERT ON orderpulse.* TO orderpulse_sink;
CREATE USER IF NOT EXISTS orderpulse_reader IDENTIFIED WITH sha256_password BY '${reader_pw}'
  SETTINGS readonly = 1;
GRANT SELECT ON orderpulse.* TO orderpulse_reader;
SQL
