#!/bin/sh
# onebox-gateway run               prepare /state (no models at first), then run nginx
# onebox-gateway switch NAME COLOR point model NAME at COLOR (blue, green or none); no reload needed
# onebox-gateway color NAME        print model NAME's live color
# onebox-gateway apply             install the files onebox staged in /state/incoming (the nginx
#                                  routes and upstreams of every model, the index page); when the
#                                  routes changed, check them and reload nginx gracefully (a bad
#                                  configuration is undone); prints "reloaded" when it reloaded
# onebox-gateway health            exit 0 when nginx answers on its listen address (the healthcheck)
#
# nginx reads each model's live color from a marker file, /state/live/NAME.blue or NAME.green,
# for each request; no marker means the model has no live color (503). A switch creates the new
# marker before it removes the old one, so every request finds a color that runs.
#
# The gateway runs on the host's network (no port proxy in front of it) and listens on
# $ONEBOX_GATEWAY_LISTEN (address:port); it reaches the models' colors at the fixed addresses
# upstreams.conf names.
set -eu
template=/etc/onebox/nginx.conf.template
conf=/tmp/onebox/nginx.conf
listen="${ONEBOX_GATEWAY_LISTEN:-127.0.0.1:3000}"
# The model servers' body limit (storage/limits.py): a whole number of bytes, else the default.
max_body="${ONEBOX_MAX_BODY_BYTES:-26214400}"
case "$max_body" in ""|*[!0-9]*) max_body=26214400 ;; esac
NGINX_FILES="upstreams.conf routes.conf"
SITE_FILES="index.html index.json"

# A model name as onebox allows it: letters, digits, '.', '_', '-', starting with a letter or digit.
check_name() {
  case "$1" in
    ""|[!A-Za-z0-9]*|*[!A-Za-z0-9._-]*) echo "bad model name: '$1'" >&2; exit 2 ;;
  esac
}

live() {
  for color in blue green; do
    if [ -f "/state/live/$1.$color" ]; then echo "$color"; return; fi
  done
  echo none
}

mark() {
  case "$2" in
    blue|green) touch "/state/live/$1.$2" ;;
    none) ;;
    *) echo "unknown color: $2 (blue, green or none)" >&2; exit 2 ;;
  esac
  for color in blue green; do
    [ "$color" = "$2" ] || rm -f "/state/live/$1.$color"
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

apply() {
  for name in $NGINX_FILES $SITE_FILES; do
    [ -f "/state/incoming/$name" ] || { echo "apply: /state/incoming/$name is missing" >&2; exit 1; }
  done
  changed=""
  for name in $NGINX_FILES; do
    cmp -s "/state/incoming/$name" "/state/nginx/$name" || changed=yes
  done
  if [ -n "$changed" ]; then
    for name in $NGINX_FILES; do
      cp "/state/nginx/$name" "/state/nginx/$name.previous"
      mv "/state/incoming/$name" "/state/nginx/$name"
    done
    if ! nginx -t -q -c "$conf"; then
      for name in $NGINX_FILES; do mv "/state/nginx/$name.previous" "/state/nginx/$name"; done
      echo "apply: the new gateway configuration was refused; the old one stays" >&2
      exit 1
    fi
  fi
  # A rename: a request for the index reads the old page or the new one, never half of one.
  for name in $SITE_FILES; do mv "/state/incoming/$name" "/state/site/$name"; done
  rm -f /state/incoming/*
  # The routes changed only when a model was added or removed (or the default moved); a swap
  # of a model's version changes the index alone, and needs no reload.
  if [ -n "$changed" ]; then nginx -c "$conf" -s reload; echo reloaded; fi
}

case "${1:-run}" in
  run)
    mkdir -p /tmp/onebox/body /tmp/onebox/proxy /state/nginx /state/live /state/site /state/incoming
    sed -e "s|@LISTEN@|$(listen_directive)|" -e "s|@MAX_BODY@|$max_body|g" "$template" > "$conf"
    [ -f /state/nginx/routes.conf ] || cp /etc/onebox/no-models.conf /state/nginx/routes.conf
    [ -f /state/nginx/upstreams.conf ] || : > /state/nginx/upstreams.conf
    # A gateway of an earlier onebox (one model) kept its color in /state/live-COLOR or
    # /state/color; onebox marks the model under its name again on `up`.
    rm -f /state/live-blue /state/live-green /state/color
    exec nginx -c "$conf" -g 'daemon off;' ;;
  switch) check_name "${2:-}"; mark "$2" "${3:-}" ;;
  color) check_name "${2:-}"; live "$2" ;;
  apply) apply ;;
  health)
    # Listening on every interface (0.0.0.0 or ::) includes loopback.
    address="${listen%:*}"
    case "$address" in
      0.0.0.0|::|"[::]") address=127.0.0.1 ;;
      *:*) address="[$address]" ;;
    esac
    exec python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://$address:${listen##*:}/gateway/healthz" ;;
  *) echo "usage: onebox-gateway run|switch NAME COLOR|color NAME|apply|health" >&2; exit 2 ;;
esac
