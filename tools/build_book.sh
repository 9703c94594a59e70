#!/usr/bin/env bash
# Build the book into _build/html, strictly: any Sphinx warning, broken reference or
# failing notebook cell makes the build fail.
#
#     bash tools/build_book.sh            # incremental build
#     bash tools/build_book.sh --all      # re-read every page (extra args go to jupyter-book)
#
# Execution follows _config.yml (`execute_notebooks: force`): every chapter is executed.
#
# The site is self-contained: before building, tools/fetch_site_assets.py brings MathJax
# (pinned, sha256-checked, from the npm registry) into _build/site_assets, which the build
# copies into the site. The first build needs the registry; later builds reuse the copy.
set -euo pipefail

# shellcheck source=tools/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MTLBOOK_ROOT"

# A chapter's claim() that no longer holds fails the run (mtlbook/book/evidence.py);
# the kernels that execute the chapters inherit this.
export MTLBOOK_STRICT_CLAIMS=1

# _config.yml loads the Sphinx extension in _ext/ as a local extension, whose folder Jupyter
# Book resolves relative to the configuration file. Put it on the path here as well, so that
# a copy of the configuration elsewhere (.ci/run builds with _build/ci_config.yml) finds it.
export PYTHONPATH="$MTLBOOK_ROOT/_ext${PYTHONPATH:+:$PYTHONPATH}"

echo "== python tools/fetch_site_assets.py"
python tools/fetch_site_assets.py

echo "== jupyter-book build . -W -n --keep-going $*"
build_start=$SECONDS
jupyter-book build . -W -n --keep-going "$@"

if [ ! -f _build/html/index.html ]; then
    echo "error: the build finished but _build/html/index.html is missing" >&2
    exit 1
fi
echo "== book built in $((SECONDS - build_start)) s: $MTLBOOK_ROOT/_build/html/index.html"
