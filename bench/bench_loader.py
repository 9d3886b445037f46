"""What it costs pytest to load the plugin's start-up modules, against Python's own loader.

pytest rewrites the assertions of every module of a ``pytest11`` plugin's package and loads the
cached result with ``marshal.load`` on the open file (``_pytest/assertion/rewrite.py``,
``_read_pyc``); Python's importer reads a ``.pyc`` with ``marshal.loads`` of its bytes.  This script
compiles each module the worker-scope start-up path imports (the list of tests/test_startup.py),
then counts, under callgrind, the instructions of both ways of reading the same code object.

    python bench/bench_loader.py

Needs valgrind.  A script, not a test: it asserts nothing.  Under a minute.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
MARK = "os_getpgid"  # callgrind dumps its counters each time this C function is entered


def measure(files: list[Path]) -> None:
    """Run under callgrind: load each file both ways between two marks."""
    for path in files:
        os.getpgid(0)
        with path.open("rb") as fp:
            marshal.load(fp)
        os.getpgid(0)
        marshal.loads(path.read_bytes())
    os.getpgid(0)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        measure([Path(p) for p in sys.argv[2:]])
        return
    from test_startup import WORKER_SCOPE  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names, files = [], []
        for name in sorted(WORKER_SCOPE):
            rel = Path(*name.split("."))
            source = ROOT / rel.with_suffix(".py")
            if not source.exists():
                source = ROOT / rel / "__init__.py"
            code = compile(source.read_text(), str(source), "exec")
            target = work / f"{name}.bin"
            target.write_bytes(marshal.dumps(code))
            names.append(name)
            files.append(target)
        out = work / "cg"
        out.mkdir()
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--dump-before={MARK}",
                f"--callgrind-out-file={out}/d.out",
                sys.executable,
                __file__,
                "--measure",
                *map(str, files),
            ],
            check=True,
            capture_output=True,
        )
        counts = []
        for dump in sorted(out.glob("d.out.*"), key=lambda p: int(p.suffix[1:])):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    counts.append(int(line.split()[1]))
                    break
        # dump 1 ends at the first mark; then alternately marshal.load(file) and marshal.loads(bytes)
        pairs = [(counts[1 + 2 * i], counts[2 + 2 * i]) for i in range(len(files))]
        print(f"{'module':<36} {'bytes':>7} {'load(file)':>12} {'loads(bytes)':>13} {'ratio':>6}")
        for name, path, (from_file, from_bytes) in zip(names, files, pairs, strict=True):
            size = path.stat().st_size
            print(f"{name:<36} {size:>7,} {from_file:>12,} {from_bytes:>13,} {from_file / from_bytes:>6.1f}")
        total_file, total_bytes = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        print(f"{'total':<36} {'':>7} {total_file:>12,} {total_bytes:>13,} {total_file / total_bytes:>6.1f}")


if __name__ == "__main__":
    main()
