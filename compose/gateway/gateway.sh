#!/bin/sh
# onebox-gateway run           mark the live color kept in /state (none at first), then run nginx
# onebox-gateway switch COLOR  point the gateway at COLOR (blue, green or none); no reload needed
# onebox-gateway color         print the live color
#
# nginx reads the live color from a marker file, /state/live-blue or /state/live-green, for each
# request; no marker means no model (503). A switch creates the new marker before it removes the
# old one, so every request finds a color that runs.
set -eu
conf=/etc/onebox/nginx.conf

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

case "${1:-run}" in
  run)
    mkdir -p /tmp/onebox/body /tmp/onebox/proxy
    # A gateway of an earlier onebox kept the color in /state/color.
    if [ -f /state/color ]; then mark "$(cat /state/color)"; rm -f /state/color; fi
    exec nginx -c "$conf" -g 'daemon off;' ;;
  switch) mark "${2:-}" ;;
  color) live ;;
  *) echo "usage: onebox-gateway run|switch COLOR|color" >&2; exit 2 ;;
esac
