#!/usr/bin/env bash
# The GPU benchmark kit's one command (docs/development.md, "GPU benchmark kit"), run on the GPU box in
# the checkout with .whl/ beside it: install the wheels that `make gpu-wheels` put in .whl/ (the box's
# own packages, benchmarks/gpu_box_packages.txt, do the rest; no network is needed), then measure. The
# table goes to $OUT when set, else out/gpu-session. The CPU rehearsal runs this same script with
# PYTHON, WHEELS, SITE and OUT of its own and --size tiny.
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
