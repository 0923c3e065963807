#!/usr/bin/env bash
# Start (or stop) Debian's nginx as a fast fixed-answer mock upstream for benchmarks.
#
#   bench/start_nginx_mock.sh PORT          # start; prints the two base URLs
#   bench/start_nginx_mock.sh PORT stop     # stop the instance started for PORT
#
# Env: NGINX_MOCK_DIR (default /tmp/relaygate-nginx-mock-PORT: config, pid, logs, temp
# files; nothing goes under /var), NGINX_MOCK_HOST (default 127.0.0.1),
# NGINX_MOCK_WORKERS (default auto).
#
# nginx daemonizes itself (master + workers) and the script returns once it listens.
# Works as root (workers then run as root so they can use the private dir) and as a normal
# user. If nginx is missing it is installed with apt-get (root only). On hosts whose
# policy-rc.d allows it, Debian's package may also start the system nginx on port 80;
# this script does not touch that one.
#
# Endpoints (see bench/nginx_mock.conf.tmpl for the exact bodies):
#   non-stream base URL: http://HOST:PORT         (POST /v1/chat/completions -> JSON + usage)
#   stream base URL:     http://HOST:PORT/stream  (POST /v1/chat/completions -> SSE + usage
#                                                  chunk + [DONE])
# The benchmark points a relay channel at each base URL, e.g. a second channel whose
# base_url is http://127.0.0.1:PORT/stream for the streaming runs, or
#   python bench/naive_relay.py --port 3100 --upstream http://127.0.0.1:PORT/stream
set -euo pipefail

PORT="${1:?usage: $0 PORT [stop]}"
ACTION="${2:-start}"
HOST="${NGINX_MOCK_HOST:-127.0.0.1}"
WORKERS="${NGINX_MOCK_WORKERS:-auto}"
DIR="${NGINX_MOCK_DIR:-/tmp/relaygate-nginx-mock-$PORT}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
NGINX="$(find_nginx)"

if [ "$ACTION" = "stop" ]; then
    if [ -s "$DIR/nginx.pid" ] && kill -0 "$(cat "$DIR/nginx.pid")" 2>/dev/null; then
        kill -QUIT "$(cat "$DIR/nginx.pid")"  # graceful stop; nginx removes its pid file
        for _ in $(seq 50); do [ -s "$DIR/nginx.pid" ] || break; sleep 0.1; done
        echo "nginx mock on port $PORT stopped"
    else
        echo "nginx mock on port $PORT is not running"
    fi
    exit 0
fi
[ "$ACTION" = "start" ] || { echo "usage: $0 PORT [stop]" >&2; exit 2; }

if [ -z "$NGINX" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "nginx is not installed; run: sudo apt-get install -y nginx-light" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1; } \
        || { apt-get update -qq && apt-get install -y --no-install-recommends nginx >/dev/null; }
    NGINX="$(find_nginx)"
    [ -n "$NGINX" ] || { echo "nginx install failed" >&2; exit 1; }
fi

if [ -s "$DIR/nginx.pid" ] && kill -0 "$(cat "$DIR/nginx.pid")" 2>/dev/null; then
    echo "nginx mock already running on port $PORT (pid $(cat "$DIR/nginx.pid"))" >&2
    exit 1
fi

mkdir -p "$DIR/tmp"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root root;"
sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@WORKERS@|$WORKERS|g" -e "s|@USER_LINE@|$USER_LINE|g" \
    "$HERE/nginx_mock.conf.tmpl" > "$DIR/nginx.conf"

# -e: the early error log too goes to DIR (otherwise nginx tries /var/log/nginx/error.log).
"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log" -t -q
"$NGINX" -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/error.log"

for _ in $(seq 50); do [ -s "$DIR/nginx.pid" ] && break; sleep 0.1; done
[ -s "$DIR/nginx.pid" ] || { echo "nginx did not start; see $DIR/error.log" >&2; exit 1; }
echo "nginx mock pid $(cat "$DIR/nginx.pid") dir $DIR"
echo "  non-stream: http://$HOST:$PORT"
echo "  stream:     http://$HOST:$PORT/stream"
