#!/usr/bin/env bash
# The README's two commands:
#   ./reproduce.sh        set up .venv if needed, then run the embedded default end to end
#   ./reproduce.sh test   set up .venv if needed, then run the test suite
#   ./reproduce.sh tabular [--mirror BASE]   the real TCGA tables without slides (results/tcga-tabular/)
# Set-up is skipped when .venv was built from the current pyproject.toml (a second call costs seconds).
# The tests also need the optional Ray extra (their Ray executor group); the default run does not.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed-from"
sha=$(sha256sum pyproject.toml | cut -d' ' -f1)
extras=test
[[ "${1:-run}" == test ]] && extras=test,ray
have=$(cat "$STAMP" 2>/dev/null || true)

# a venv built with the tests' extras also serves the default run
if [[ ! -x "$VENV/bin/python" || ( "$have" != "$sha $extras" && "$have" != "$sha test,ray" ) ]]; then
    echo "[reproduce] setting up $VENV with extras [$extras] (pyproject.toml changed or no venv yet)"
    t0=$(date +%s)
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
    echo "$sha $extras" > "$STAMP"
    echo "[reproduce] set-up took $(( $(date +%s) - t0 )) s"
fi

export MLFLOW_DISABLE_TELEMETRY=true
case "${1:-run}" in
    test)
        shift || true
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
