#!/bin/sh
# onebox-gateway run               prepare /state (no models at first), then run nginx
# onebox-gateway switch NAME COLOR point model NAME at COLOR (blue, green or none); no reload needed
# onebox-gateway color NAME        print model NAME's live color
# onebox-gateway apply             install what onebox staged in /state/incoming: the served models
#                                  and the default (files under /state/names, no reload), the index
#                                  page, and the nginx configuration, which changes only with the
#                                  network or the labeling service (then checked, and nginx reloaded
#                                  gracefully; a bad configuration is undone; prints "reloaded")
# onebox-gateway health            exit 0 when nginx answers on its listen address (the healthcheck)
#
# nginx finds the model of each request from files (serving/gateway_config.py says which):
# /state/names/NAME/served while NAME is served, its address slot's set bits as b0, b1, ..., and
# its live color as a marker, blue or green; /state/names/@default links to the default model's.
# A switch creates the new marker before it removes the old one, so every request finds a color
# that runs; a new model's folder is complete before `served` appears, and `served` goes first
# when a model is removed, so no request sees half a route.
#
# The gateway runs on the host's network (no port proxy in front of it) and listens on
# $ONEBOX_GATEWAY_LISTEN (address:port); it reaches the models' colors at the fixed addresses
# upstreams.conf names.
set -eu
template=/etc/onebox/nginx.conf.template
conf=/tmp/onebox/nginx.conf
auth_conf=/tmp/onebox/auth.conf
listen="${ONEBOX_GATEWAY_LISTEN:-127.0.0.1:3000}"
# The model servers' body limit (storage/limits.py): a whole number of bytes, else the default.
max_body="${ONEBOX_MAX_BODY_BYTES:-26214400}"
case "$max_body" in ""|*[!0-9]*) max_body=26214400 ;; esac
NAMES=/state/names
NGINX_FILES="upstreams.conf routes.conf"
SITE_FILES="index.html index.json unknown-model.json"

# A model name as onebox allows it: letters, digits, '.', '_', '-', starting with a letter or digit.
check_name() {
  case "$1" in
    ""|[!A-Za-z0-9]*|*[!A-Za-z0-9._-]*) echo "bad model name: '$1'" >&2; exit 2 ;;
  esac
}

live() {
  for color in blue green; do
    if [ -f "$NAMES/$1/$color" ]; then echo "$color"; return; fi
  done
  echo none
}

mark() {
  case "$2" in
    blue|green) mkdir -p "$NAMES/$1"; touch "$NAMES/$1/$2" ;;
    none) ;;
    *) echo "unknown color: $2 (blue, green or none)" >&2; exit 2 ;;
  esac
  for color in blue green; do
    [ "$color" = "$2" ] || rm -f "$NAMES/$1/$color"
  done
}

# Serve model NAME at the slot KEY (binary digits): its bits first, `served` last.
route() {
  case "$2" in ""|*[!01]*) echo "bad slot: '$2'" >&2; exit 2 ;; esac
  folder="$NAMES/$1"
  if [ -f "$folder/served" ] && [ "$(cat "$folder/slot" 2>/dev/null)" = "$2" ]; then return; fi
  mkdir -p "$folder"
  rm -f "$folder/served" "$folder"/b[0-9]*
  bits="$2"
  bit=0
  while [ -n "$bits" ]; do
    if [ "${bits#"${bits%?}"}" = 1 ]; then touch "$folder/b$bit"; fi
    bits="${bits%?}"
    bit=$((bit + 1))
  done
  echo "$2" > "$folder/slot"
  touch "$folder/served"
}

# Stop routing model NAME: from the moment `served` is gone its name answers 404.
unroute() {
  check_name "$1"
  rm -f "$NAMES/$1/served"
  rm -rf "${NAMES:?}/$1"
}

# Whether NAME has a line in the staged list of served models (sh has no local variables:
# these names are its own).
listed() {
  while read -r listed_name listed_key; do
    if [ "$listed_name" = "$1" ]; then return 0; fi
  done < /state/incoming/models
  return 1
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

# Whether the listen address is reachable from this machine only.
on_loopback() {
  case "${listen%:*}" in
    127.*|localhost|::1|"[::1]") return 0 ;;
    *) return 1 ;;
  esac
}

# A case-sensitive nginx regex matching exactly $1 (map's plain strings ignore case; the secrets'
# characters are letters, digits and ._~+/=@%!*,- of which '.', '+' and '*' mean something).
exactly() {
  printf '"~^%s$"' "$(printf '%s' "$1" | sed 's/[.+*]/[&]/g')"
}

# /tmp/onebox/auth.conf (nginx.conf.template includes it): with ONEBOX_PASSWORD and ONEBOX_API_KEY
# set, every route but the open ones needs the key (Authorization: Bearer KEY or X-API-Key: KEY)
# or the login (basic auth, which a browser asks for); without them, nothing is asked, and the
# gateway refuses to listen beyond loopback.
write_auth() {
  user="${ONEBOX_USERNAME:-onebox}"
  password="${ONEBOX_PASSWORD:-}"
  key="${ONEBOX_API_KEY:-}"
  umask 077
  if [ -z "$password" ] && [ -z "$key" ]; then
    if ! on_loopback; then
      echo "refusing to start: ONEBOX_BIND publishes the gateway on ${listen%:*}, beyond this machine, but ONEBOX_PASSWORD and ONEBOX_API_KEY are not set (README: Exposing the ports)" >&2
      exit 2
    fi
    printf '%s\n' 'map $uri $onebox_deny { default 0; }' 'map $uri $onebox_challenge { default ""; }' > "$auth_conf"
    return
  fi
  if [ -z "$password" ] || [ -z "$key" ]; then
    echo "refusing to start: set both ONEBOX_PASSWORD and ONEBOX_API_KEY (or neither, on loopback)" >&2
    exit 2
  fi
  for secret in "$user" "$password" "$key"; do
    case "$secret" in
      *[!A-Za-z0-9._~+/=@%!*,-]*)
        echo "refusing to start: ONEBOX_USERNAME, ONEBOX_PASSWORD and ONEBOX_API_KEY may hold letters, digits and ._~+/=@%!*,- only" >&2
        exit 2 ;;
    esac
  done
  basic="$(printf '%s:%s' "$user" "$password" | base64 -w 0)"
  cat > "$auth_conf" <<CONF
# Written by onebox-gateway at start; the secrets are the container's environment.
map \$uri \$onebox_open {
    default 0;
    "~^/gateway/" 1;
    / 1;
    /index.json 1;
    "~^(/models/[^/]+)?/(healthz|readyz|livez)\$" 1;
    "~^/label(/|\$)" 1;
}
# An open route as the client sent it: no '%' and no segment starting with '.', which nginx
# decodes and resolves before routing while the model servers get the path as sent.
map \$request_uri \$onebox_plain {
    default 1;
    "~^[^?]*%" 0;
    "~^[^?]*/[.]" 0;
}
map \$http_authorization \$onebox_authorization_ok {
    default 0;
    $(exactly "Bearer $key") 1;
    $(exactly "Basic $basic") 1;
}
map \$http_x_api_key \$onebox_key_ok {
    default 0;
    $(exactly "$key") 1;
}
map \$onebox_open\$onebox_plain\$onebox_authorization_ok\$onebox_key_ok \$onebox_deny {
    default 0;
    0000 1;
    0100 1;
    1000 1;
}
map \$onebox_deny \$onebox_challenge {
    default "";
    1 'Basic realm="onebox", charset="UTF-8"';
}
CONF
}

apply() {
  for name in $NGINX_FILES $SITE_FILES models default; do
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
  # Models added (their colors were marked first), then the default, then models removed.
  while read -r name key; do
    if [ -n "$name" ]; then check_name "$name"; route "$name" "$key"; fi
  done < /state/incoming/models
  default="$(cat /state/incoming/default)"
  if [ -n "$default" ]; then
    check_name "$default"
    ln -sfn "$default" "$NAMES/.default"
    mv -T "$NAMES/.default" "$NAMES/@default"  # a rename: the link is the old one or the new one
  else
    rm -f "$NAMES/@default"
  fi
  for folder in "$NAMES"/*; do
    name="${folder##*/}"
    if [ "$name" != "@default" ] && [ -d "$folder" ] && ! listed "$name"; then unroute "$name"; fi
  done
  # A rename: a request for the index reads the old page or the new one, never half of one.
  for name in $SITE_FILES; do mv "/state/incoming/$name" "/state/site/$name"; done
  rm -f /state/incoming/*
  # The configuration changes only with the network or the labeling service, not with the models.
  if [ -n "$changed" ]; then nginx -c "$conf" -s reload; echo reloaded; fi
}

case "${1:-run}" in
  run)
    mkdir -p /tmp/onebox/body /tmp/onebox/proxy /state/nginx "$NAMES" /state/site /state/incoming
    write_auth
    unset ONEBOX_PASSWORD ONEBOX_API_KEY
    sed -e "s|@LISTEN@|$(listen_directive)|" -e "s|@MAX_BODY@|$max_body|g" "$template" > "$conf"
    [ -f /state/nginx/routes.conf ] || cp /etc/onebox/no-models.conf /state/nginx/routes.conf
    [ -f /state/nginx/upstreams.conf ] || : > /state/nginx/upstreams.conf
    # A gateway of an earlier onebox kept its colors in /state/live/NAME.COLOR (before that in
    # /state/live-COLOR or /state/color); onebox marks each model again on `up`.
    rm -rf /state/live /state/live-blue /state/live-green /state/color
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
