#!/usr/bin/env bash
# The demo command: installs what is missing, builds (Release), and runs the main job.
# Today: open the bundled sample PDF and a URL in disposables through odysseyd
# (`odyssey demo`); while the engine is not built, falls back to the vchan demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=build/release
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DODYSSEY_BUILD_TESTS=OFF \
  -DODYSSEY_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)"
if [[ -x "$build/engine/odyssey" ]]; then
  exec "$build/engine/odyssey" demo "$@"
elif [[ -x "$build/hal/vchan/vchan-demo" ]]; then
  exec "$build/hal/vchan/vchan-demo" "$@"
fi
echo "demo.sh: nothing to run yet (neither odyssey nor vchan-demo was built)" >&2
exit 1
