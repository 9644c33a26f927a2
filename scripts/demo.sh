#!/usr/bin/env bash
# The demo command: installs what is missing, builds (Release), and runs the main job:
# `odyssey demo` opens the bundled sample PDF and a URL in disposables through odysseyd
# (started for the demo on its own socket and stopped afterwards) and prints what happened
# and the latency of each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=build/release
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DODYSSEY_BUILD_TESTS=OFF \
  -DODYSSEY_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target odyssey odysseyd odyssey-sandbox-stub \
  qrexec-agent odyssey-native-zygote || { echo "demo.sh: the build failed (see above)" >&2; exit 1; }
# A daemon of the demo's own unless the caller points at one.
if [[ -z "${ODYSSEY_SOCKET:-}" ]]; then
  demo_dir=$(mktemp -d /tmp/odyssey-demo-XXXXXX)
  # The daemon makes its socket's folder private (0700); the state dir sits beside it in a
  # folder the sandboxes' mapped ids can traverse, so root's odysseyd can use hal/native.
  chmod 711 "$demo_dir"
  export ODYSSEY_SOCKET="$demo_dir/run/odysseyd.sock" ODYSSEY_STATE_DIR="$demo_dir/state"
  trap '"$build/engine/odyssey" --no-autostart shutdown >/dev/null 2>&1 || true; sleep 0.2; rm -rf "$demo_dir"' EXIT
fi
"$build/engine/odyssey" demo --sample samples/sample.pdf "$@"
