#!/bin/sh
# onebox-gateway run           mark the live color kept in /state (none at first), then run nginx
# onebox-gateway switch COLOR  point the gateway at COLOR (blue, green or none); no reload needed
# onebox-gateway color         print the live color
# onebox-gateway health        exit 0 when nginx answers on its listen address (the healthcheck)
#
# nginx reads the live color from a marker file, /state/live-blue or /state/live-green, for each
# request; no marker means no model (503). A switch creates the new marker before it removes the
# old one, so every request finds a color that runs.
#
# The gateway runs on the host's network (no port proxy in front of it) and listens on
# $ONEBOX_GATEWAY_LISTEN (address:port); the colors answer at $ONEBOX_MODEL_BLUE and
# $ONEBOX_MODEL_GREEN (address:port on the appliance's network).
set -eu
template=/etc/onebox/nginx.conf.template
conf=/tmp/onebox/nginx.conf
listen="${ONEBOX_GATEWAY_LISTEN:-127.0.0.1:3000}"

live() {
  for color in blue green; do
    if [ -f "/state/live-$color" ]; then echo "$color"; return; fi
  done
  echo none
}

mark() {
  case "$1" in
    blue|green) touch "/state/live-$1" ;;
    none) ;;
    *) echo "unknown color: $1 (blue, green or none)" >&2; exit 2 ;;
  esac
  for color in blue green; do
    [ "$color" = "$1" ] || rm -f "/state/live-$color"
  done
}

# nginx's form of address:port: an IPv6 address goes in brackets.
listen_directive() {
  address="${listen%:*}"
  port="${listen##*:}"
  case "$address" in
    *:*) echo "[$address]:$port" ;;
    *) echo "$address:$port" ;;
  esac
}

case "${1:-run}" in
  run)
    mkdir -p /tmp/onebox/body /tmp/onebox/proxy
    sed -e "s|@LISTEN@|$(listen_directive)|" \
        -e "s|@MODEL_BLUE@|${ONEBOX_MODEL_BLUE:?ONEBOX_MODEL_BLUE is not set (address:port of model-blue)}|" \
        -e "s|@MODEL_GREEN@|${ONEBOX_MODEL_GREEN:?ONEBOX_MODEL_GREEN is not set (address:port of model-green)}|" \
        "$template" > "$conf"
    # A gateway of an earlier onebox kept the color in /state/color.
    if [ -f /state/color ]; then mark "$(cat /state/color)"; rm -f /state/color; fi
    exec nginx -c "$conf" -g 'daemon off;' ;;
  switch) mark "${2:-}" ;;
  color) live ;;
  health)
    # Listening on every interface (0.0.0.0 or ::) includes loopback.
    address="${listen%:*}"
    case "$address" in
      0.0.0.0|::|"[::]") address=127.0.0.1 ;;
      *:*) address="[$address]" ;;
    esac
    exec python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://$address:${listen##*:}/gateway/healthz" ;;
  *) echo "usage: onebox-gateway run|switch COLOR|color|health" >&2; exit 2 ;;
esac
