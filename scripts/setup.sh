#!/usr/bin/env bash
# Idempotent set-up of .venv: builds llama-cpp-python with the flags that work on
# these machines (a native build segfaults in llama_decode), then installs
# thinktank editable with its test extras, and installs Debian's bubblewrap (the
# sandbox for model-written code) and chromium with chromium-driver (the headless
# browser the view's end-to-end tests drive) when they are missing. Re-running it
# is a no-op until pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages when COMMAND is missing: `need COMMAND WHY PACKAGE...`.
# Quiet, as root or through sudo -n, with an apt-get update when the lists are
# stale; when that is impossible it says what to install and goes on.
need() {
  local command=$1 why=$2
  shift 2
  command -v "$command" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo -n"
    echo "setup: installing $* ($why)..." >&2
    $as_root apt-get install -y -q "$@" >/dev/null 2>&1 \
      || { $as_root apt-get update -q >/dev/null && $as_root apt-get install -y -q "$@" >/dev/null; } \
      || echo "setup: could not install $*; install it (apt-get install $*) for $why" >&2
  else
    echo "setup: $command is missing; install $* for $why" >&2
  fi
}

# The sandbox (src/thinktank/verify/sandbox.py) runs model-written code only under
# bubblewrap; without it, grading code fails with a message saying so.
need bwrap "the sandbox for model-written code" bubblewrap
# tests/test_view_browser.py drives `thinktank view` in headless chromium through
# chromedriver; without them it skips, naming this script.
need chromedriver "the view's browser tests" chromium chromium-driver

PYTHON=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"

stamp=.venv/.thinktank-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip==26.3"

# Built wheels are cached outside the checkout (a fresh clone reuses them) under a
# key made of the version and the flags, so a wheel built any other way is never used.
wheel_dir=${THINKTANK_WHEEL_CACHE:-$HOME/.cache/thinktank/wheels}/$(echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
if ! ls "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION (about 3-6 minutes on 2 cores)..." >&2
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/pip wheel -q --no-deps --no-cache-dir \
    -w "$wheel_dir" "llama-cpp-python==$LLAMA_VERSION"
fi
.venv/bin/pip install -q --disable-pip-version-check "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
.venv/bin/pip install -q --disable-pip-version-check -e ".[torch,embed,ray,test]"
echo "$want" > "$stamp"
