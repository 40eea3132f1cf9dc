#!/bin/sh
# The MLflow server of the appliance. With ONEBOX_PASSWORD set, MLflow's basic-auth app asks
# every route but /health for the login ONEBOX_USERNAME / ONEBOX_PASSWORD (its admin user,
# created on the first start and given the current password on each start after). Without it,
# the server refuses to listen beyond loopback (ONEBOX_BIND).
#
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

app=""
if [ -n "${ONEBOX_PASSWORD:-}" ]; then
  # MLflow's own users (created by the admin) are kept; its admin is onebox's login.
  export MLFLOW_AUTH_CONFIG_PATH=/data/basic_auth.ini
  cat > "$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:////data/basic_auth.db
admin_username = ${ONEBOX_USERNAME:-onebox}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
  # MLflow sets the admin's password only when it creates the user: a changed ONEBOX_PASSWORD
  # would otherwise leave the old one working. The CSRF key of its user pages is derived from
  # the password (the same across restarts, changed with it).
  python3 /usr/local/bin/mlflow-admin-password
  MLFLOW_FLASK_SERVER_SECRET_KEY="$(python3 -c "import hashlib, os; print(hashlib.sha256(b'onebox-mlflow-csrf:' + os.environb[b'ONEBOX_PASSWORD']).hexdigest())")"
  MLFLOW_AUTH_ADMIN_USERNAME="${ONEBOX_USERNAME:-onebox}"
  MLFLOW_AUTH_ADMIN_PASSWORD="$ONEBOX_PASSWORD"
  export MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_AUTH_ADMIN_PASSWORD
  app="--app-name basic-auth"
else
  case "${ONEBOX_BIND:-127.0.0.1}" in
    127.*|localhost|::1|"[::1]") ;;
    *) echo "refusing to start: ONEBOX_BIND=$ONEBOX_BIND publishes MLflow beyond this machine, but ONEBOX_PASSWORD is not set (README: Exposing the ports)" >&2
       exit 2 ;;
  esac
fi
unset ONEBOX_PASSWORD ONEBOX_API_KEY

# One worker and no job runner: the defaults started 15 processes and used 2.9 GB here.
exec mlflow server \
  --host 0.0.0.0 --port 5000 --workers 1 \
  --backend-store-uri sqlite:////data/mlflow.db \
  --artifacts-destination /data/artifacts --serve-artifacts \
  --allowed-hosts "$hosts" \
  $app ${MLFLOW_EXTRA_ARGS:-}
