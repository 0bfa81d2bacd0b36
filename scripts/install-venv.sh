#!/bin/sh
# Usage: scripts/install-venv.sh PYTHON VENV SPEC
# Creates VENV if it is missing and installs SPEC into it (editable: "." or ".[test]"), with the
# fastest installer there is: uv if it is on PATH, else uv installed into the venv by pip (a second
# or two, from PyPI), else pip. What the venv already has is not installed again, so `make demo`
# and `make test` share one venv.
set -eu
python=$1 venv=$2 spec=$3

if [ ! -x "$venv/bin/python" ]; then
    if command -v uv >/dev/null 2>&1; then
        uv venv --quiet --seed --python "$python" "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi

uv=$(command -v uv 2>/dev/null || true)
if [ -z "$uv" ]; then
    if [ ! -x "$venv/bin/uv" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv >/dev/null 2>&1 \
            || echo "note: could not install uv; installing with pip (slower)" >&2
    fi
    if [ -x "$venv/bin/uv" ]; then uv=$venv/bin/uv; fi
fi

if [ -n "$uv" ]; then
    # --compile-bytecode: as pip does; without it, where PYTHONDONTWRITEBYTECODE is set, every
    # process compiles what it imports again (the CLI starts twice as slowly).
    "$uv" pip install --quiet --compile-bytecode --python "$venv/bin/python" -e "$spec"
else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
fi
