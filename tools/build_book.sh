#!/usr/bin/env bash
# Build the book into _build/html, strictly: any Sphinx warning, broken reference or
# failing notebook cell makes the build fail.
#
#     bash tools/build_book.sh            # incremental build
#     bash tools/build_book.sh --all      # re-read every page (extra args go to jupyter-book)
#
# Execution follows _config.yml (`execute_notebooks: force`): every chapter is executed.
set -euo pipefail

# shellcheck source=tools/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MTLBOOK_ROOT"

echo "== jupyter-book build . -W -n --keep-going $*"
jupyter-book build . -W -n --keep-going "$@"

if [ ! -f _build/html/index.html ]; then
    echo "error: the build finished but _build/html/index.html is missing" >&2
    exit 1
fi
echo "== book built: $MTLBOOK_ROOT/_build/html/index.html"
