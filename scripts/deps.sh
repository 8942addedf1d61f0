#!/usr/bin/env bash
# Bring what the build and the tests need:
#  - cmake and libclang (HiGHS's build and bindgen),
#  - grpcio, grpcio-tools, googleapis-common-protos (the Python clients' tests),
#  - chromium (the report's browser test) and prometheus (the test that a
#    real Prometheus scrapes /metrics); only where we may use apt.
# Uses Debian packages when run as root, else PyPI wheels in the user's site.
#
#   scripts/deps.sh          everything (make test, make lint, make bench)
#   scripts/deps.sh build    only what the build needs (make demo)
#
# EDGEPLAN_DEPS_FROM=pypi takes cmake and libclang from PyPI even where the
# system has them (how the non-root path is tried on a machine that has both).
set -euo pipefail
only_build=false
[ "${1:-}" = build ] && only_build=true
cd "$(dirname "$0")/.."
pypi=false
[ "${EDGEPLAN_DEPS_FROM:-}" = pypi ] && pypi=true
have_cmake() { ! $pypi && command -v cmake >/dev/null 2>&1; }
have_libclang() {
  ! $pypi && { ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || [ -n "${LIBCLANG_PATH:-}" ]; }
}
apt_ok() { ! $pypi && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_packages=()
if ! have_cmake || ! have_libclang; then
  if apt_ok; then
    apt_packages+=(cmake libclang-dev)
  else
    echo "deps: installing cmake and libclang from PyPI into your user site (not root)" >&2
    # Debian marks its Python as externally managed: a --user install is
    # refused there without --break-system-packages (it touches only ~/.local).
    python3 -m pip install --user --quiet --disable-pip-version-check cmake libclang 2>/dev/null \
      || python3 -m pip install --user --quiet --disable-pip-version-check --break-system-packages cmake libclang
  fi
fi
# Where the PyPI wheels put cmake and libclang, for the Makefile's cargo
# commands (they read target/deps.env): nothing to export by hand.
mkdir -p target
: > target/deps.env
if ! have_cmake && python3 -c 'import cmake' >/dev/null 2>&1; then
  echo "CMAKE=$(python3 -c 'import cmake,os;print(os.path.join(cmake.CMAKE_BIN_DIR,"cmake"))')" >> target/deps.env
fi
if ! have_libclang && python3 -c 'import clang' >/dev/null 2>&1; then
  echo "LIBCLANG_PATH=$(python3 -c 'import clang,os;print(os.path.join(os.path.dirname(clang.__file__),"native"))')" >> target/deps.env
fi
if ! $only_build && ! command -v chromium >/dev/null 2>&1 && apt_ok; then
  apt_packages+=(chromium)
fi
if ! $only_build && ! command -v prometheus >/dev/null 2>&1 && apt_ok; then
  apt_packages+=(prometheus)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "deps: installing ${apt_packages[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
if $only_build; then
  exit 0
fi
if ! python3 -c 'import sushy_tools.static.main' >/dev/null 2>&1; then
  # OpenStack's static Redfish mockup server (standard library only, so
  # without its declared dependencies) for the `collect` tests.
  echo "deps: installing sushy-tools 2.2.0 (sushy-static) from PyPI (Redfish tests)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --user --no-deps sushy-tools==2.2.0 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --no-deps sushy-tools==2.2.0
fi
if ! python3 -c 'import grpc, grpc_tools, google.rpc.error_details_pb2' >/dev/null 2>&1; then
  echo "deps: installing grpcio, grpcio-tools and googleapis-common-protos from PyPI (Python client tests)" >&2
  py=(grpcio grpcio-tools googleapis-common-protos)
  python3 -m pip install --quiet --disable-pip-version-check --user "${py[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check "${py[@]}"
fi
