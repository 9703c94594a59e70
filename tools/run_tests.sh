#!/usr/bin/env bash
# Lint the repository, type-check the package, run the unit tests in tests/ and execute every notebook in
# chapters/ from a fresh kernel (nbmake). Extra arguments go to pytest, e.g.
#
#     bash tools/run_tests.sh -x                 # stop at the first failure
#     bash tools/run_tests.sh --overwrite        # keep the executed notebooks' outputs (CI)
#     bash tools/run_tests.sh -k shared_bottom   # a subset
set -euo pipefail

# shellcheck source=tools/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MTLBOOK_ROOT"

# A chapter's claim() that no longer holds fails the run (mtlbook/book/evidence.py);
# the kernels that execute the chapters inherit this.
export MTLBOOK_STRICT_CLAIMS=1

echo "== ruff check . && ruff format --check ."
ruff check .
ruff format --check .
echo "== mypy (the mtlbook package; settings in pyproject.toml)"
mypy

# Figures: the unit tests draw with the non-GUI Agg backend (set in conftest.py); notebook
# kernels use the inline backend, so executed notebooks keep their figures.
paths=()
for dir in tests chapters; do
    if [ -d "$dir" ]; then
        paths+=("$dir")
    else
        echo "warning: $dir/ does not exist; nothing to collect there" >&2
    fi
done
if [ ${#paths[@]} -eq 0 ]; then
    echo "error: neither tests/ nor chapters/ exists; there is nothing to test" >&2
    exit 5
fi

echo "== pytest ${paths[*]} --nbmake"
status=0
python -m pytest "${paths[@]}" --nbmake --nbmake-timeout=300 --durations=10 "$@" || status=$?

if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests (exit code 5); an empty test run counts as a failure" >&2
fi
exit "$status"
