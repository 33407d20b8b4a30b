#!/usr/bin/env bash
# The project's one test command: installs the package with its test extra, then runs pytest.
#   scripts/test.sh                      # the whole suite, quietly
#   scripts/test.sh tests/unit -x -v     # any pytest arguments
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

if [[ $# -eq 0 ]]; then
    set -- -q
fi
exec python -m pytest "$@"
