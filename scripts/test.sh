#!/usr/bin/env bash
# The test command: set up, lint (ruff, mypy, Terraform formatting), then the fast tests; `--all` adds the
# slower group (end-to-end subprocess builds, kill tests, the farm integration test), as CI does. Test
# servers (a Prefect test server, SeaweedFS, PostgreSQL, a Hub API stand-in) are started by the tests.
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
select=(-m "not slow")
if [ "${1:-}" = "--all" ]; then
  select=()
  shift
fi
bash scripts/setup.sh
# The project's bytecode, written once: the tests start hundreds of Python processes (the CLI, flow runs, the
# toolchain double), and where PYTHONDONTWRITEBYTECODE is set (as on the CI machine) each compiled every module
# of mlc_farm it imported, again (~0.1-0.2 CPU s a process). Python reads bytecode that is there even so.
.venv/bin/python -m compileall -q -j 0 mlc_farm flows tasks tests >/dev/null
# The catalog page is tested in a real browser: Debian's chromium, installed once. CI also installs mesa's
# Vulkan driver (lavapipe), as any desktop with a GPU has one: the suite must pass where a Vulkan driver is
# installed but the toolchain's runtime has no Vulkan, as where there is none.
missing=()
if [ ${#select[@]} -eq 0 ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [ -z "${CI:-}" ] || compgen -G "/usr/share/vulkan/icd.d/lvp_icd.*.json" >/dev/null || missing+=(mesa-vulkan-drivers)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the slow tests need: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/check-terraform.sh
# mypy (half a minute from a fresh clone, on one core) runs beside the tests, whose first seconds wait on their
# servers' start; its verdict is printed, and counts, when they end.
mypy_log=$(mktemp)
.venv/bin/mypy >"$mypy_log" 2>&1 &
mypy_pid=$!
trap 'kill "$mypy_pid" 2>/dev/null || true; rm -f "$mypy_log"' EXIT
set +e
# Three worker processes (pytest-xdist), or MLC_FARM_TEST_WORKERS: each starts its own test servers. On 2 cores
# most of a test waits on servers, subprocesses and timeouts: three take ~0.75x the time of two. Tests marked
# with one xdist_group run on one worker, one after another, so what they share is made once (loadgroup), in
# the suite's own order (tests/conftest.py: groups first, flows last, slow first), not by group size.
.venv/bin/python -m pytest -n "${MLC_FARM_TEST_WORKERS:-3}" --dist loadgroup --no-loadscope-reorder --durations=15 \
  "${select[@]}" "$@"
code=$?
wait "$mypy_pid"
mypy_code=$?
set -e
cat "$mypy_log"
if [ "$mypy_code" -ne 0 ]; then
  echo "mypy found problems (above)" >&2
fi
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
[ "$code" -ne 0 ] || code=$mypy_code
exit "$code"
