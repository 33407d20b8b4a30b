#!/usr/bin/env bash
# The project's one test command: installs the package with its test extra, then runs pytest.
#   scripts/test.sh                      # the whole suite, quietly
#   scripts/test.sh tests/unit -x -v     # any pytest arguments
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

if [[ $# -eq 0 ]]; then
    # The whole suite on every CPU (pytest-xdist); a test file stays on one worker, so its
    # servers and fixtures are shared as when run alone. Most tests wait on loopback servers
    # and subprocesses, so two workers on two CPUs cut the wall time (see the README).
    set -- -q -n auto --dist loadfile
fi
exec python -m pytest "$@"
