"""The documentation against the code, so the reference cannot drift.

docs/configuration.md is compared both ways with what the plugin itself reports:
the options of ``pytest --help``'s neuron group, the ``neuron_*`` ini keys of its
ini section, the marker signature of ``pytest --markers``, and the environment
variables named in pytest_neuron/ (the settings table and every module).  The
docs build with ``sphinx-build -W``, and every YAML block of the CI recipes
parses (Sphinx, its extensions and PyYAML are in the test extras).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_neuron import NeuronCores
from pytest_neuron.core.marker import KEYWORDS
from pytest_neuron.core.settings import RUN_SETTINGS, TEST_SETTINGS

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "pytest_neuron"
CONFIGURATION = DOCS / "configuration.md"
OPTION_GROUP = "NeuronCores for parallel runs (pytest-neuron):"
ENV_NAME = re.compile(r"(?:PYTEST_NEURON|NEURON)_[A-Z0-9_]*[A-Z0-9]")
SETTINGS = (*RUN_SETTINGS, *TEST_SETTINGS)


# -- reading the pages -------------------------------------------------------------------------------
def sections(path: Path) -> dict[str, str]:
    """The ``## `` sections of a Markdown page, by heading text (fenced code is not a heading)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
            continue
        current.append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


def section(path: Path, heading: str) -> str:
    found = sections(path)
    assert heading in found, f"{path.name} has no section '## {heading}' (it has: {sorted(found)})"
    return found[heading]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text``, as stripped cells."""
    rows: list[list[str]] = []
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1]):
            continue  # the header row
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            continue  # the separator row
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def first_code(cell: str, pattern: str) -> str:
    """The first ``code`` span of ``cell`` that starts with ``pattern``, up to ``=`` or a blank."""
    match = re.search(r"`(" + pattern + r"[^`=\s]*)", cell)
    assert match is not None, f"no `{pattern}...` in table cell {cell!r}"
    return match.group(1)


def code_spans(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def documented_options() -> dict[str, list[str]]:
    rows = table_rows(section(CONFIGURATION, "Command-line options"))
    options = {first_code(row[0], "--"): row for row in rows}
    assert len(options) == len(rows), "an option is listed twice"
    return options


def documented_ini_keys() -> set[str]:
    return {first_code(row[0], "neuron_") for row in table_rows(section(CONFIGURATION, "Ini keys"))}


def documented_env_vars() -> dict[str, list[str]]:
    rows = table_rows(section(CONFIGURATION, "Environment variables"))
    return {first_code(row[0], "[A-Z]"): row for row in rows}


def fenced_blocks(path: Path, language: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every fenced block of ``language`` (also when indented in a list)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"(\s*)```" + re.escape(language) + r"\s*", lines[i])
        if opening is None:
            i += 1
            continue
        indent, start, body = len(opening.group(1)), i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        yield start, "\n".join(body)
        i += 1


# -- asking pytest -----------------------------------------------------------------------------------
def clean_env(tmp: Path) -> dict[str, str]:
    """This environment without Neuron, xdist or pytest settings, and with nothing to detect."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NEURON_", "PYTEST_NEURON_", "PYTEST_XDIST_"))
        and name not in ("MASTER_PORT", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    empty_host = tmp / "empty-host"
    empty_host.mkdir(exist_ok=True)
    env["PYTEST_NEURON_HOST_ROOT"] = str(empty_host)
    env["PYTEST_NEURON_NEURON_LS"] = str(tmp / "no-such-neuron-ls")
    env["COLUMNS"] = "200"  # argparse wraps help at the terminal width
    return env


def run_pytest(tmp: Path, *args: str) -> str:
    """``python -m pytest ARGS`` in an empty project; its stdout."""
    (tmp / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp,
        env=clean_env(tmp),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def help_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("help")
    return run_pytest(tmp, "--help", "--neuron-scope=test", f"--neuron-lock-dir={tmp / 'locks'}")


@pytest.fixture(scope="module")
def markers_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("markers")
    return run_pytest(tmp, "--markers", "--neuron-scope=test", f"--neuron-lock-dir={tmp / 'locks'}")


def help_options(help_text: str) -> set[str]:
    """The options of the neuron group of ``pytest --help``."""
    lines = help_text.splitlines()
    assert OPTION_GROUP in lines, help_text
    options: set[str] = set()
    for line in lines[lines.index(OPTION_GROUP) + 1 :]:
        if line and not line.startswith(" "):
            break  # the next group
        if match := re.match(r"  (--[\w-]+)", line):
            options.add(match.group(1))
    return options


def help_ini_keys(help_text: str) -> set[str]:
    """The ``neuron_*`` keys of the ini section of ``pytest --help``."""
    return set(re.findall(r"^  (neuron_\w+) \(\w+\):", help_text, flags=re.MULTILINE))


def marker_signature(text: str) -> str:
    """``@pytest.mark.neuron(...)``: the signature only, up to its closing parenthesis."""
    match = re.search(r"^@pytest\.mark\.neuron\(([^)]*)\)", text, flags=re.MULTILINE)
    assert match is not None, text
    return match.group(0)


def env_names_in_package() -> dict[str, str]:
    """Every environment variable name the package spells out, as a string constant, and where."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.fullmatch(node.value)
            ):
                found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


# -- options, ini keys, marker, fixture ----------------------------------------------------------------
def test_every_option_of_pytest_help_is_documented_and_nothing_else(help_text: str) -> None:
    in_help = help_options(help_text)
    assert "--neuron-cores" in in_help
    documented = set(documented_options())
    assert in_help - documented == set(), "options missing from docs/configuration.md"
    assert documented - in_help == set(), "documented options that pytest --help does not list"


def test_every_ini_key_of_pytest_help_is_documented_and_nothing_else(help_text: str) -> None:
    in_help = help_ini_keys(help_text)
    assert "neuron_cores" in in_help
    documented = documented_ini_keys()
    assert in_help - documented == set(), "ini keys missing from docs/configuration.md"
    assert documented - in_help == set(), "documented ini keys that pytest --help does not list"
    in_options_table = {first_code(row[1], "neuron_") for row in documented_options().values()}
    assert in_options_table == in_help, "the options table names other ini keys"


def test_options_table_names_each_settings_ini_key_env_var_and_default() -> None:
    options = documented_options()
    for spec in SETTINGS:
        row = options.get(spec.option)
        assert row is not None, f"{spec.option} is not in the options table"
        _, ini, env, default, _ = row
        assert spec.ini in code_spans(ini), f"{spec.option}: ini key {spec.ini} expected, table says {ini!r}"
        if spec.env is not None:
            assert spec.env in code_spans(env), f"{spec.option}: {spec.env} expected, table says {env!r}"
        if spec.default is not None and not isinstance(spec.default, bool):
            value = f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)
            assert f"`{value}`" in default, f"{spec.option}: default {value} expected, table says {default!r}"


def test_option_help_of_each_setting_names_its_environment_variable(help_text: str) -> None:
    flat = " ".join(help_text.split())
    for spec in SETTINGS:
        if spec.env is not None:
            assert f"[env {spec.env}]" in flat, spec.option


def test_marker_signature_on_the_page_is_the_registered_one(markers_text: str) -> None:
    registered = marker_signature(markers_text)
    marker_section = section(CONFIGURATION, "The `neuron` marker")
    assert registered in marker_section.splitlines(), (
        f"docs/configuration.md should show {registered!r} as `pytest --markers` does"
    )
    parameters = re.findall(r"(\w+)=", registered)
    assert parameters == list(KEYWORDS)
    arguments = [first_code(row[0], "[a-z]") for row in table_rows(marker_section)]
    assert arguments == parameters, "the marker's argument table differs from its signature"


def test_fixture_attributes_are_the_dataclass_fields() -> None:
    rows = table_rows(section(CONFIGURATION, "The `neuron_cores` fixture"))
    documented = [first_code(row[0], "[a-z]") for row in rows]
    assert documented == [field.name for field in dataclasses.fields(NeuronCores)]


# -- environment variables ----------------------------------------------------------------------------
def test_every_environment_variable_of_the_settings_is_documented() -> None:
    documented = documented_env_vars()
    for spec in SETTINGS:
        if spec.env is not None:
            assert spec.env in documented, f"{spec.env} ({spec.option}) is not in the environment table"
            kind = documented[spec.env][1]
            assert "setting" in kind, f"{spec.env}: kind should say setting, not {kind!r}"


def test_every_environment_variable_the_package_names_is_documented() -> None:
    named = env_names_in_package()
    assert "PYTEST_NEURON_LOCK_DIR" in named
    missing = {name: where for name, where in named.items() if name not in documented_env_vars()}
    assert missing == {}, "environment variables used in pytest_neuron/ but not documented"


def test_every_documented_environment_variable_exists_in_the_package() -> None:
    source = "\n".join(path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py"))
    stale = sorted(name for name in documented_env_vars() if name not in source)
    assert stale == [], "documented environment variables that pytest_neuron/ never mentions"


# -- the site --------------------------------------------------------------------------------------------
def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    match = re.search(r"```\{toctree\}\n(.*?)```", index, flags=re.DOTALL)
    assert match is not None, "docs/index.md has no toctree"
    listed = [line.strip() for line in match.group(1).splitlines() if line.strip() and ":" not in line]
    pages = sorted(path.stem for path in DOCS.glob("*.md") if path.stem != "index")
    assert sorted(listed) == pages
    for page in ("quickstart", "concepts", "configuration", "ci-recipes", "troubleshooting"):
        assert page in listed


def test_quickstart_shows_the_readme_commands_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(commands) == 2, "the README's Quickstart should have two ```sh blocks"
    for block in commands:
        assert f"```sh\n{block}```" in quickstart, f"docs/quickstart.md does not copy:\n{block}"


def test_ci_recipes_yaml_blocks_parse() -> None:
    import yaml  # in the test extras

    blocks = list(fenced_blocks(DOCS / "ci-recipes.md", "yaml"))
    assert len(blocks) >= 5, "the CI recipes should hold at least five YAML files"
    for line, text in blocks:
        try:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            pytest.fail(f"docs/ci-recipes.md line {line}: invalid YAML: {exc}")
        assert documents, f"docs/ci-recipes.md line {line}: empty YAML block"
        assert all(isinstance(doc, dict) for doc in documents), f"line {line}: not a mapping"


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    # sphinx, myst-parser and furo are in the test extras: a missing one fails, never skips
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "configuration.html").is_file()


def test_option_placeholders_on_the_page_are_the_ones_of_pytest_help(help_text: str) -> None:
    in_help = dict(re.findall(r"^  (--neuron-[\w-]+)=(\S+)", help_text, flags=re.MULTILINE))
    rows = table_rows(section(CONFIGURATION, "Command-line options"))
    documented = {m.group(1): m.group(2) for row in rows if (m := re.match(r"`(--[\w-]+)=([^`]+)`", row[0]))}
    assert documented == in_help


# -- sample outputs: docs/check_samples.py reruns them -----------------------------------------------
def _check_samples() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_samples", DOCS / "check_samples.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_samples"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


CHECK = _check_samples()
ALL_SAMPLES = [s for page in sorted(DOCS.glob("*.md")) for s in CHECK.samples(page)]


def test_every_sample_says_how_it_was_made() -> None:
    assert len(ALL_SAMPLES) > 30
    vague = [s.name for s in ALL_SAMPLES if s.unchecked is None and s.command is None]
    assert vague == [], "samples with neither `% sample: run CMD` nor `% sample: unchecked REASON`"
    unchecked = [s for s in ALL_SAMPLES if s.unchecked is not None]
    assert all(len(s.unchecked) > 10 for s in unchecked), "an unchecked sample must say why"
    assert len(unchecked) < len(ALL_SAMPLES) / 2


@pytest.mark.parametrize("sample", [s for s in ALL_SAMPLES if s.unchecked is None], ids=lambda s: s.name)
def test_sample_output_matches_a_fresh_run(sample: Any) -> None:
    problems = CHECK.check(sample)
    assert problems == [], f"docs/{sample.name}: the sample no longer matches its command\n" + "\n".join(
        problems
    )


def test_the_sample_check_finds_a_changed_line() -> None:
    output = "==== neuron ====\ncores per worker: gw1 0-3, gw0 4-7\n3 passed in 1.23s\n"
    assert CHECK.differences("cores per worker: gw0 0-3, gw1 4-7\n3 passed in 9.87s", output) == []
    assert CHECK.differences("cores per worker: gw0 0-3\n", output) != []
    assert CHECK.differences("3 passed in 1.2s\ncores per worker: gw0 0-3, gw1 4-7", output) != []  # order
    assert CHECK.differences("4 passed in 1.23s", output) != []
    table = "  0-7    held   30751  13:31:45  10.9s  pytest (the whole run)"
    assert CHECK.differences(table, "  0-7  held  4795  09:03:52  5.0s  pytest (the whole run)") == []
    assert CHECK.differences(table, "  0-3  held  4795  09:03:52  5.0s  pytest (the whole run)") != []
