#!/usr/bin/env bash
# Instructions executed by a serial run of 2,000 trivial unmarked tests, with the plugin
# installed (no pool, no device) and with -p no:neuron: a repeatable overhead figure on a
# machine whose wall times are too noisy for a 2 % target.  Needs valgrind.
# Usage: bench/overhead_callgrind.sh [PYTHON]   (about 3 minutes)
set -euo pipefail
python=${1:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/suite" "$work/empty-host"
"$python" - "$work/suite" <<'PY'
import sys, pathlib
root = pathlib.Path(sys.argv[1])
for m in range(20):
    (root / f"test_m{m:02d}.py").write_text("".join(f"def test_{i}():\n    pass\n\n" for i in range(100)))
(root / "pytest.ini").write_text("[pytest]\n")
PY
cd "$work/suite"
export PYTHONHASHSEED=0 PYTEST_NEURON_HOST_ROOT="$work/empty-host" PYTEST_NEURON_NEURON_LS=/nonexistent/neuron-ls
unset PYTHONDONTWRITEBYTECODE NEURON_RT_VISIBLE_CORES NEURON_RT_NUM_CORES
"$python" -m pytest -q -p no:cacheprovider >/dev/null  # warm the bytecode caches
count() {
  valgrind --tool=callgrind --callgrind-out-file="$work/$1.out" "$python" -m pytest -q -p no:cacheprovider "${@:2}" >/dev/null 2>&1
  grep -E '^(summary|totals):' "$work/$1.out" | head -1 | awk '{print $2}'
}
with=$(count plugin)
without=$(count off -p no:neuron)
echo "instructions, 2000 unmarked tests, serial: plugin $with, -p no:neuron $without"
awk -v a="$with" -v b="$without" 'BEGIN { printf "ratio %.4f (+%.2f%%)\n", a / b, (a / b - 1) * 100 }'
