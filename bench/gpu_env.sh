# Sourced by the GPU benchmark scripts: puts the repo's packages on PYTHONPATH and checks
# the Python packages named in NEED. The device has no network: where some are missing, a
# carried .whl/ wheelhouse (every wheel they need, dependencies included) is unpacked into
# /tmp/site, ahead of the machine's own packages. Expects PYTHON and NEED to be set.
missing() {
  "$PYTHON" -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $NEED
}
MISSING="$(missing)"
if [ -n "$MISSING" ] && [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  MISSING="$(missing)"
fi
if [ -n "$MISSING" ]; then
  echo "$0: missing Python packages: $MISSING (put wheels in .whl/)" >&2
  exit 1
fi
export PYTHONPATH="$PWD:$PWD/runtime:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import specfleet.cli' || exit 1
