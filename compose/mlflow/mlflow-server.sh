#!/bin/sh
# WAL lets readers (the UI) and the writer (a training run) work at once; the mode is stored in
# the database file, so setting it once is enough.
set -euf  # -f: no globbing: the host patterns below hold "*"
python3 -c "import sqlite3; sqlite3.connect('/data/mlflow.db').execute('PRAGMA journal_mode=WAL').fetchall()"

# The Host headers MLflow answers (it refuses others: DNS-rebinding protection). Loopback at any
# port (the published port and the healthcheck's 5000), the address ports are published on
# (ONEBOX_BIND, unless that is every interface), and each name in ONEBOX_HOSTNAMES (comma-separated:
# the names and addresses the box is reached by once it leaves loopback).
hosts="localhost,localhost:*,127.0.0.1,127.0.0.1:*"
case "${ONEBOX_BIND:-127.0.0.1}" in
  0.0.0.0|::|"[::]"|127.0.0.1|localhost) ;;
  *) hosts="$hosts,$ONEBOX_BIND,$ONEBOX_BIND:*" ;;
esac
old_ifs=$IFS
IFS=,
for name in ${ONEBOX_HOSTNAMES:-}; do
  [ -n "$name" ] && hosts="$hosts,$name,$name:*"
done
IFS=$old_ifs

# One worker and no job runner: the defaults started 15 processes and used 2.9 GB here.
exec mlflow server \
  --host 0.0.0.0 --port 5000 --workers 1 \
  --backend-store-uri sqlite:////data/mlflow.db \
  --artifacts-destination /data/artifacts --serve-artifacts \
  --allowed-hosts "$hosts" \
  ${MLFLOW_EXTRA_ARGS:-}
