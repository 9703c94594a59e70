# shellcheck shell=bash
# Set up and activate the Python environment shared by tools/build_book.sh,
# tools/run_tests.sh and .ci/run. Source it, do not execute it:
#
#     source tools/env.sh
#
# What it does:
#   1. creates a virtual environment in .venv at the repository root if there is none
#      (override the location with MTLBOOK_VENV, the interpreter with MTLBOOK_PYTHON);
#   2. installs torch==2.13.0 first, so that the package's loose `torch>=2.2,<3`
#      requirement is already satisfied and pip never picks a different (large) build;
#   3. installs this repository in editable mode with the `book` and `test` extras;
#   4. writes a stamp into the environment. The stamp holds a hash of pyproject.toml, of
#      the torch pin and of the extras: while they are unchanged, later runs skip steps 2-3
#      and take well under a second. Edit pyproject.toml (or delete the stamp) to reinstall.
#
# Optional settings (environment variables):
#   MTLBOOK_VENV            path of the virtual environment   (default: <repo>/.venv)
#   MTLBOOK_PYTHON          interpreter that creates it       (default: python3)
#   MTLBOOK_TORCH_INDEX_URL extra package index for torch, e.g.
#                           https://download.pytorch.org/whl/cpu for the CPU-only wheel
#                           where the default index would serve a CUDA build

MTLBOOK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MTLBOOK_ROOT

_mtlbook_torch_spec="torch==2.13.0"
_mtlbook_extras="book,test"
_mtlbook_venv="${MTLBOOK_VENV:-$MTLBOOK_ROOT/.venv}"
_mtlbook_python="${MTLBOOK_PYTHON:-python3}"

_mtlbook_log() { printf '[env] %s\n' "$*" >&2; }

# 1. The virtual environment ---------------------------------------------------------
if [ ! -x "$_mtlbook_venv/bin/python" ]; then
    if ! command -v "$_mtlbook_python" >/dev/null 2>&1; then
        _mtlbook_log "error: '$_mtlbook_python' not found; install Python >= 3.10 or set MTLBOOK_PYTHON"
        return 1
    fi
    if ! "$_mtlbook_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        _mtlbook_log "error: mtlbook needs Python >= 3.10; '$_mtlbook_python' is $("$_mtlbook_python" -V 2>&1)"
        return 1
    fi
    _mtlbook_log "creating virtual environment in $_mtlbook_venv"
    "$_mtlbook_python" -m venv "$_mtlbook_venv" || return 1
fi

# Activate by hand (PATH and VIRTUAL_ENV): works under `set -u` and in any shell state.
export VIRTUAL_ENV="$_mtlbook_venv"
case ":$PATH:" in
    *":$VIRTUAL_ENV/bin:"*) ;;
    *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;;
esac
unset PYTHONHOME

# 2-4. Dependencies, skipped while the stamp matches -----------------------------------
_mtlbook_stamp_file="$VIRTUAL_ENV/.mtlbook-install-stamp"
_mtlbook_stamp="$(
    {
        printf '%s %s\n' "$_mtlbook_torch_spec" "$_mtlbook_extras"
        cat "$MTLBOOK_ROOT/pyproject.toml"
    } | python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
)" || return 1

if [ -f "$_mtlbook_stamp_file" ] && [ "$(cat "$_mtlbook_stamp_file")" = "$_mtlbook_stamp" ]; then
    _mtlbook_log "dependencies up to date in $VIRTUAL_ENV"
else
    _mtlbook_log "installing $_mtlbook_torch_spec (CPU build where available)"
    _mtlbook_torch_args=()
    if [ -n "${MTLBOOK_TORCH_INDEX_URL:-}" ]; then
        _mtlbook_torch_args=(--extra-index-url "$MTLBOOK_TORCH_INDEX_URL")
    fi
    python -m pip install --quiet --disable-pip-version-check \
        ${_mtlbook_torch_args[@]+"${_mtlbook_torch_args[@]}"} "$_mtlbook_torch_spec" || return 1

    _mtlbook_log "installing mtlbook (editable) with the book and test extras"
    python -m pip install --quiet --disable-pip-version-check \
        --editable "$MTLBOOK_ROOT[$_mtlbook_extras]" || return 1

    printf '%s\n' "$_mtlbook_stamp" >"$_mtlbook_stamp_file"
    _mtlbook_log "environment ready: $(python -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
fi

# Notebook kernels pick matplotlib's inline backend only when MPLBACKEND is unset, and
# only the inline backend stores figures in the executed notebooks. Never inherit it.
unset MPLBACKEND

unset _mtlbook_torch_spec _mtlbook_extras _mtlbook_venv _mtlbook_python _mtlbook_stamp_file _mtlbook_stamp \
    _mtlbook_torch_args
unset -f _mtlbook_log
