#!/usr/bin/env bash
# The README's two commands:
#   ./reproduce.sh        set up .venv if needed, then run the embedded default end to end
#   ./reproduce.sh test   set up .venv if needed, then run the test suite
#   ./reproduce.sh tabular [--mirror BASE]   the real TCGA tables without slides (results/tcga-tabular/)
# Set-up is skipped when .venv was built from the current pyproject.toml (a second call costs seconds).
# The tests also need the optional Ray and cluster extras (the Ray executor group; the cluster tier's
# PostgreSQL driver), and a PostgreSQL server for the cluster tier (tests/cluster/), which starts its own:
# Debian's package, installed below where it is missing and this shell can (root with apt-get); the tier
# skips, naming the reason, where it could not be. The default run needs none of these.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed-from"
sha=$(sha256sum pyproject.toml | cut -d' ' -f1)
extras=test
[[ "${1:-run}" == test ]] && extras=test,ray,cluster
have=$(cat "$STAMP" 2>/dev/null || true)

# a venv built with the tests' extras also serves the default run
if [[ ! -x "$VENV/bin/python" || ( "$have" != "$sha $extras" && "$have" != "$sha test,ray,cluster" ) ]]; then
    echo "[reproduce] setting up $VENV with extras [$extras] (pyproject.toml changed or no venv yet)"
    t0=$(date +%s)
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
    echo "$sha $extras" > "$STAMP"
    echo "[reproduce] set-up took $(( $(date +%s) - t0 )) s"
fi

# Debian's PostgreSQL server for the cluster tier, where none is installed (PATH or /usr/lib/postgresql/*/bin)
install_postgres() {
    if command -v postgres > /dev/null || compgen -G "/usr/lib/postgresql/*/bin/postgres" > /dev/null; then
        return
    fi
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get > /dev/null; then
        echo "[reproduce] no PostgreSQL server, and no root apt-get to install one: the cluster tier will be" \
             "skipped (install Debian's postgresql, or any PostgreSQL server on PATH, to run it)" >&2
        return
    fi
    echo "[reproduce] installing Debian's PostgreSQL server for the cluster tier (tests/cluster/)"
    local t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -qq --no-install-recommends postgresql > /dev/null 2>&1 ||
       { apt-get update -qq > /dev/null && apt-get install -y -qq --no-install-recommends postgresql > /dev/null; }; then
        echo "[reproduce] PostgreSQL installed in $(( $(date +%s) - t0 )) s"
    else
        echo "[reproduce] apt-get could not install postgresql: the cluster tier will be skipped" >&2
    fi
}

export MLFLOW_DISABLE_TELEMETRY=true
case "${1:-run}" in
    test)
        shift || true
        install_postgres
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    run)
        exec "$VENV/bin/python" -m bench.reproduce
        ;;
    tabular)
        shift
        exec "$VENV/bin/python" -m bench.reproduce tabular "$@"
        ;;
    *)
        echo "usage: ./reproduce.sh [test [pytest args...] | tabular [--mirror BASE]]" >&2
        exit 2
        ;;
esac
