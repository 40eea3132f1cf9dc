#!/bin/sh
# onebox-gateway run           render the live color kept in /state (none at first), then run nginx
# onebox-gateway switch COLOR  point the gateway at COLOR (blue, green or none), reload gracefully
# onebox-gateway color         print the live color
set -eu
state=/tmp/onebox
conf=/etc/onebox/nginx.conf

render() {
  mkdir -p "$state/body" "$state/proxy"
  case "$1" in
    blue|green)
      printf 'set $model_upstream http://model-%s:3000;\nproxy_pass $model_upstream;\n' "$1" >"$state/live.conf.new" ;;
    none)
      printf '%s\n' "default_type application/json;" \
        "return 503 '{\"error\": \"no model is deployed yet; train one with: onebox train\"}';" >"$state/live.conf.new" ;;
    *) echo "unknown color: $1 (blue, green or none)" >&2; exit 2 ;;
  esac
  mv "$state/live.conf.new" "$state/live.conf"
  echo "$1" >/state/color.new && mv /state/color.new /state/color
}

case "${1:-run}" in
  run) render "$(cat /state/color 2>/dev/null || echo none)"; exec nginx -c "$conf" -g 'daemon off;' ;;
  switch) render "$2"; nginx -c "$conf" -t -q && nginx -c "$conf" -s reload ;;
  color) cat /state/color ;;
  *) echo "usage: onebox-gateway run|switch COLOR|color" >&2; exit 2 ;;
esac
