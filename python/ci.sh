#!/usr/bin/env bash
# The Python drop-in's CI: a venv with pinned maturin and pytest, the
# extension built into it (debug, in the workspace's target/ so the compiled
# `hecate` is reused), the `hecate` binary the tests start as the MorphCloud
# simulator, then pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="${HECATE_PY_VENV:-$root/target/python-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv"; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    apt-get update -qq && apt-get install -y -qq python3-venv
    "$python" -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q "maturin==1.16.0" "pytest==9.2.0"

cd "$root"
cargo build -q --bin hecate
cd "$here"
# `maturin develop` installs the extension into the venv without a wheel
# round trip; VIRTUAL_ENV tells it which.
VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop -q
export HECATE_TEST_BIN="$root/target/debug/hecate"
exec "$venv/bin/python" -m pytest -q tests "$@"
