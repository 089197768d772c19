#!/usr/bin/env bash
# The GPU session kit's one command (docs/benchmarks.md, "GPU session kit"), run through the device tool:
# install the wheels that `make gpu-wheels` put in .whl/ (the machine's own packages do the rest, and it
# reaches no registry), then measure. The table goes to $OUT. The CPU rehearsal runs this same script
# with PYTHON, WHEELS, SITE and OUT of its own and --size tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/svd-site}
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SOURCE_COMMIT=${SOURCE_COMMIT:-$(cat "$WHEELS/COMMIT" 2>/dev/null || true)}
export SOURCE_COMMIT
exec "$PYTHON" -m benchmarks.gpu_session --out "${OUT:-out/gpu-session}" "$@"
