"""Run the commands shown in docs/*.md and check each page's sample output against the real one.

Every ```` ```text ```` block in the docs is preceded by MyST comment lines (``%``, not rendered)
that say how it was made::

    % sample: run python -m pytest test_env.py -q --neuron-cores=0-7 --neuron-lock-dir=/tmp/docsrun/locks
    ```text
    ...
    ```

Directives, in order: ``files DIR...`` (copy docs/samples/DIR into the scratch directory),
``root`` (run from the repository root instead), ``bg CMD`` (start CMD in the background),
``setup CMD`` (run CMD first), ``wait-leases N`` / ``wait-waiters N`` (until the status of
``/tmp/docsrun/locks`` shows N leases / waiting requests), ``sleep S``, ``run CMD`` (the
command whose output the sample shows; without it, the sample's own first line ``$ CMD``),
and ``unchecked REASON`` for a sample no command here can reproduce (measured numbers,
another host).  ``/tmp/docsrun`` in a command is a fresh scratch directory; commands run in
bash on a simulated pool with no Neuron device (no ``neuron-ls``, an empty host root).

The check: after normalising what varies between runs (times, durations, pids, ids, user and
host, interpreter and plugin versions, column padding, the order of lines of xdist workers and of
progress characters, and which xdist worker got what), every line of the sample must appear in
the output, in order; a line cut to the terminal width (``...``) matches up to near its end.

``python docs/check_samples.py [PAGE.md ...]`` checks pages and prints what differs;
``python docs/check_samples.py --show PAGE.md:LINE`` prints the output a sample comes from;
tests/test_docs.py runs each sample as a test of its own.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SAMPLE_FILES = DOCS / "samples"
SCRATCH = "/tmp/docsrun"
DIRECTIVE = re.compile(r"^\s*% sample: (\w[\w-]*)\s*(.*)$")
RUN_TIMEOUT = 90.0


@dataclass
class Sample:
    page: str
    line: int  # of the opening fence, 1-based
    text: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def unchecked(self) -> str | None:
        return next((arg for step, arg in self.steps if step == "unchecked"), None)

    @property
    def command(self) -> str | None:
        run = [arg for step, arg in self.steps if step == "run"]
        if run:
            return run[-1]
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        return first[2:] if first.startswith("$ ") else None


def samples(page: Path) -> list[Sample]:
    """Every ```` ```text ```` and ```` ```json ```` block of ``page`` with the directives above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Sample] = []
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"(\s*)```(?:text|json)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        indent, start = len(opening.group(1)), i
        steps: list[tuple[str, str]] = []
        j = i - 1
        while j >= 0 and (m := DIRECTIVE.match(lines[j])):
            steps.insert(0, (m.group(1), m.group(2).strip()))
            j -= 1
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        found.append(Sample(page.name, start + 1, "\n".join(body), steps))
        i += 1
    return found


# -- running -----------------------------------------------------------------------------------------
def clean_env(scratch: Path) -> dict[str, str]:
    """This environment without Neuron, xdist or pytest settings, and with nothing to detect."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NEURON_", "PYTEST_NEURON_", "PYTEST_XDIST_", "E2E_"))
        and name not in ("MASTER_PORT", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        and name not in ("PYTEST_CURRENT_TEST", "PYTEST_TIMEOUT", "COLUMNS", "LINES")
        # pytest prints short-summary messages in full on CI, not on the terminal a sample shows
        and name not in ("CI", "BUILD_NUMBER")
    }
    (scratch / "empty-host").mkdir(exist_ok=True)
    env["PYTEST_NEURON_HOST_ROOT"] = str(scratch / "empty-host")
    env["PYTEST_NEURON_NEURON_LS"] = str(scratch / "no-such-neuron-ls")
    # the examples' fake host is one directory per machine: a sample of a run without the plugin
    # (whose workers fight over it on purpose) must not refuse another sample's runtimes
    env["PYTEST_NEURON_FAKE_DIR"] = str(scratch / "fake-host")
    env["COLUMNS"] = "80"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


def _status(scratch: Path, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_neuron", "status", "--lock-dir", str(scratch / "locks"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc: dict[str, object] = json.loads(done.stdout) if done.returncode == 0 else {}
    return doc


def _count(doc: dict[str, object], key: str) -> int:
    value = doc.get(key, [])
    return len(value) if isinstance(value, list) else 0


def run_sample(sample: Sample, scratch: Path) -> str:
    """Run ``sample``'s directives in ``scratch`` (standing for /tmp/docsrun); the run's output."""
    env = clean_env(scratch)
    cwd = scratch
    background: list[subprocess.Popen[bytes]] = []

    def here(command: str) -> str:
        return command.replace(SCRATCH, str(scratch))

    try:
        for step, arg in sample.steps:
            if step == "files":
                for name in arg.split():
                    shutil.copytree(SAMPLE_FILES / name, scratch, dirs_exist_ok=True)
            elif step == "root":
                cwd = ROOT
            elif step == "bg":
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", here(arg)],
                        cwd=cwd,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            elif step in ("wait-leases", "wait-waiters"):
                key = "leases" if step == "wait-leases" else "waiting_requests"
                deadline = time.monotonic() + RUN_TIMEOUT
                while _count(_status(scratch, env), key) < int(arg):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{sample.name}: no {arg} {key} within {RUN_TIMEOUT:g}s")
                    time.sleep(0.1)
            elif step == "setup":
                subprocess.run(["bash", "-c", here(arg)], cwd=cwd, env=env, check=True, timeout=RUN_TIMEOUT)
            elif step == "sleep":
                time.sleep(float(arg))
        command = sample.command
        if command is None:
            raise RuntimeError(f"{sample.name}: no `% sample: run CMD` and no `$ CMD` first line")
        done = subprocess.run(
            ["bash", "-c", here(command)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return done.stdout.replace(str(scratch), SCRATCH).replace(str(ROOT), "/tmp/qs")
    finally:
        for proc in background:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


# -- comparing ---------------------------------------------------------------------------------------
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    user, host = re.escape(getpass.getuser()), re.escape(socket.gethostname().split(".")[0])
    return [
        (re.compile(r"^platform .*"), "platform #"),
        (re.compile(r"^plugins: .*"), "plugins: #"),
        (re.compile(r"^(timeout|timeout method|timeout func_only): .*"), "#timeout"),
        (re.compile(r"Python \d+\.\d+\.\d+( /\S+)?"), "Python #"),
        (re.compile(r"\S*/(python3?(\.\d+)?)\b(?= -m)"), "python"),
        (re.compile(rf"\b(root|{user})@(vm|{host})\b"), "#who"),
        (re.compile(rf"(?<=[\s\"])(root|{user})(?=[\s\"])"), "#user"),
        (re.compile(rf"(?<=[\s\"])(vm|{host})(?=[\s\":])"), "#host"),
        (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "#date"),
        (re.compile(r"\b\d{1,2}:\d{2}:\d{2}\b"), "#time"),
        (re.compile(r"\b\d+m\d{2}s\b|\b\d+(\.\d+)?s\b"), "#s"),
        (re.compile(r"\b\d+\.\d+\b"), "#n"),
        (re.compile(r"\b[0-9a-f]{12}-[0-9a-f]{8}\b"), "#key"),  # PYTEST_NEURON_KEY: run id, lease
        (re.compile(r"\b[0-9a-f]{12,}\b"), "#hex"),
        (re.compile(r"\bgw\d+\b"), "gw#"),  # which worker gets which slice or test varies
        (re.compile(r"(?<!localhost:)(?<!PORT=)\b\d{3,}(\.\d+)?\b"), "#n"),  # ports are kept
    ]


def normalise(text: str) -> list[str]:
    """``text`` as comparable lines: varying parts replaced, padding collapsed, xdist order sorted."""
    patterns = _patterns()
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        progress = re.fullmatch(r"([.sFEx]+)\s*\[\s*\d+%\]", line.strip())
        if progress:
            line = "".join(sorted(progress.group(1))) + " [100%]"
        for pattern, replacement in patterns:
            line = pattern.sub(replacement, line)
        line = re.sub(r"(?<=\S) {2,}", " ", line)
        if line.lstrip().startswith("cores per worker: "):  # which worker got which slice varies
            head, _, rest = line.partition(": ")
            line = f"{head}: {', '.join(sorted(rest.split(', ')))}"
        line = re.sub(r"^([=_-])\1+ (.*?) \1+$", r"\1\1 \2 \1\1", line)  # a rule's width follows its text
        out.append(line)
    # lines of xdist workers ([gw1] PASSED ...) and the ordering of parallel runs vary: sort each block
    result: list[str] = []
    block: list[str] = []
    for line in [*out, ""]:
        if line.lstrip().startswith("[gw"):
            block.append(line)
            continue
        result += sorted(block)
        block = []
        result.append(line)
    return result[:-1]


def differences(sample_text: str, output: str) -> list[str]:
    """Sample lines not found in the output, in order; empty when the sample matches."""
    wanted = [
        line
        for line in normalise(sample_text)
        if line.strip() not in ("", "...") and not line.lstrip().startswith("$ ")  # "...": lines left out
    ]
    got = normalise(output)
    at = 0
    for line in wanted:
        try:
            at = got.index(line, at) + 1 if not line.endswith("...") else _cut_match(line, got, at)
        except ValueError:
            context = "\n".join(f"    {g}" for g in got)
            return [f"not in the output (after line {at}): {line!r}\n  normalised output:\n{context}"]
    return []


def _cut_match(line: str, got: list[str], at: int) -> int:
    """A line cut to the terminal width (``...``): where it was cut depends on the width of a pid."""
    prefix = line[:-3][:-8]
    for i in range(at, len(got)):
        if got[i].endswith("...") and got[i].startswith(prefix):
            return i + 1
    raise ValueError(line)


def check(sample: Sample) -> list[str]:
    """What differs between ``sample`` and a fresh run of its command (``[]``: nothing)."""
    if sample.unchecked is not None:
        return []
    if sample.command is None:
        return ["no `% sample: run CMD` (or `% sample: unchecked REASON`) above it, and no `$ CMD` line"]
    scratch = Path(tempfile.mkdtemp(prefix="docsrun-"))
    try:
        return differences(sample.text, run_sample(sample, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def show(name: str) -> int:
    """Print the raw output of the sample ``PAGE.md:LINE`` (to paste into the page)."""
    page, line = name.rsplit(":", 1)
    (sample,) = [s for s in samples(DOCS / Path(page).name) if s.line == int(line)]
    scratch = Path(tempfile.mkdtemp(prefix="docsrun-"))
    try:
        sys.stdout.write(run_sample(sample, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--show"]:
        return show(argv[1])
    pages = [Path(a) for a in argv] or sorted(DOCS.glob("*.md"))
    failed = 0
    for page in pages:
        for sample in samples(page):
            if sample.unchecked is not None:
                print(f"{sample.name}: unchecked ({sample.unchecked})")
                continue
            problems = check(sample)
            failed += bool(problems)
            print(f"{sample.name}: {'DIFFERS' if problems else 'ok'}")
            for problem in problems:
                print("  " + problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
