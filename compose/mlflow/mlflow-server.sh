#!/bin/sh
# WAL lets readers (the UI) and the writer (a training run) work at once; the mode is stored in
# the database file, so setting it once is enough.
set -euf  # -f: no globbing; MLFLOW_EXTRA_ARGS may hold "*"
python3 -c "import sqlite3; sqlite3.connect('/data/mlflow.db').execute('PRAGMA journal_mode=WAL').fetchall()"
# One worker and no job runner: the defaults started 15 processes and used 2.9 GB here.
exec mlflow server \
  --host 0.0.0.0 --port 5000 --workers 1 \
  --backend-store-uri sqlite:////data/mlflow.db \
  --artifacts-destination /data/artifacts --serve-artifacts \
  ${MLFLOW_EXTRA_ARGS:-}
