#!/usr/bin/env bash
# The two commands of the README:
#   ./dev.sh up [pod up options]   install POD into .venv (first run) and start a local 3-node cluster
#   ./dev.sh test [pytest args]    install POD with its test extras into .venv and run the tests
#   ./dev.sh lint                  ruff over the whole tree (.ci/run runs it before the tests)
# Any other argument runs the `pod` client from .venv, e.g. ./dev.sh run greet world --wait
set -euo pipefail
cd "$(dirname "$0")"
VENV="${POD_VENV:-.venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  local extras="$1" stamp="$VENV/.pod-installed$1"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".$extras"
    touch "$stamp"
  fi
}

cmd="${1:-up}"
[ $# -gt 0 ] && shift
case "$cmd" in
  up)
    ensure_venv ""
    exec "$VENV/bin/pod" up "$@"
    ;;
  test)
    ensure_venv "[test]"
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  lint)
    ensure_venv "[test]"
    exec "$VENV/bin/ruff" check "$@" .
    ;;
  bench)
    ensure_venv ""
    exec "$VENV/bin/python" -m podnode.bench "$@"
    ;;
  bench-failover)
    ensure_venv ""
    exec "$VENV/bin/python" -m podnode.bench.failover "$@"
    ;;
  bench-scaling)
    ensure_venv ""
    exec "$VENV/bin/python" -m podnode.bench.scaling "$@"
    ;;
  bench-nodes)
    ensure_venv ""
    exec "$VENV/bin/python" -m podnode.bench.nodes "$@"
    ;;
  bench-depth)
    ensure_venv ""
    exec "$VENV/bin/python" -m podnode.bench.depth "$@"
    ;;
  *)
    ensure_venv ""
    exec "$VENV/bin/pod" "$cmd" "$@"
    ;;
esac
