#!/bin/sh
# The Prefect server of the appliance (API and UI). With ONEBOX_PASSWORD set, Prefect's own server
# auth string asks every API call but the health checks for the login ONEBOX_USERNAME:ONEBOX_PASSWORD
# (the UI asks for it once; clients send PREFECT_API_AUTH_STRING). Without it, the server refuses
# to listen beyond loopback (ONEBOX_BIND).
set -eu

if [ -n "${ONEBOX_PASSWORD:-}" ]; then
  # Only when there is a password: an empty auth string would turn the check on for "".
  PREFECT_SERVER_API_AUTH_STRING="${ONEBOX_USERNAME:-onebox}:$ONEBOX_PASSWORD"
  export PREFECT_SERVER_API_AUTH_STRING
else
  unset PREFECT_SERVER_API_AUTH_STRING
  case "${ONEBOX_BIND:-127.0.0.1}" in
    127.*|localhost|::1|"[::1]") ;;
    *) echo "refusing to start: ONEBOX_BIND=$ONEBOX_BIND publishes Prefect beyond this machine, but ONEBOX_PASSWORD is not set (README: Exposing the ports)" >&2
       exit 2 ;;
  esac
fi
unset ONEBOX_PASSWORD ONEBOX_API_KEY

exec prefect server start --host 0.0.0.0 --port 4200
