"""The package's layers: imports go one way, there are no cycles, and the status CLI never imports pytest.

Layers, lowest first: ``core`` (pure logic, stdlib only), ``host`` (reads the machine), ``locks``
(the cross-process lock protocol), ``plugins`` (everything that imports pytest), then the entry
points at the top (``plugin``, ``status``, ``__main__``, ``__init__``).  ``testing`` (the fake
runtime) may use ``core`` only.  Every import of the package's own modules is read from the source
(top-level and function-level alike, ``TYPE_CHECKING`` blocks included), so a lazy import cannot hide
a wrong-way dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_neuron"
RANK = {"core": 0, "host": 1, "locks": 2, "plugins": 3, "top": 4}
#: what each layer may import besides its own modules and the ones below it
MAY_IMPORT = {"testing": {"core", "testing"}}
NEVER_PYTEST = ("core", "host", "locks", "status", "__main__", "testing")
MAX_LINES = 400
#: modules over MAX_LINES, each with the reason written at its top
LONG_MODULES: dict[str, str] = {
    "pytest_neuron.locks.lease": "Longer than the package's other modules on purpose",
    "pytest_neuron.plugins.scheduler": "Longer than the package's other modules on purpose",
    "pytest_neuron.locks.status": "Longer than the package's other modules on purpose",
    "pytest_neuron.core.status_view": "Longer than the package's other modules on purpose",
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    if parts[1] in RANK or parts[1] == "testing":
        return parts[1]
    return "top"


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never executed)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def imports_of(path: Path, root: Path = PACKAGE, *, runtime: bool = False) -> set[str]:
    """Every pytest_neuron module (and ``pytest``/``_pytest``) that ``path`` imports, at any depth.

    ``runtime``: only the imports that run (not those under ``if TYPE_CHECKING:``).
    """
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree) if runtime else set()
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # "from . import state" imports a module
                candidate = f"{target}.{alias.name}"
                if (root.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    found.add(candidate)
    pytest_names = ("pytest", "_pytest")
    return {n for n in found if n.startswith("pytest_neuron") or n.split(".")[0] in pytest_names}


def _graph(*, runtime: bool) -> dict[str, set[str]]:
    return {
        name: {m for m in imports_of(path, runtime=runtime) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = _graph(runtime=False)
RUNTIME_GRAPH = _graph(runtime=True)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_one_way(name: str) -> None:
    mine = layer(name)
    for target in sorted(GRAPH[name]):
        theirs = layer(target)
        if mine in MAY_IMPORT:
            assert theirs in MAY_IMPORT[mine], f"{name} ({mine}) imports {target} ({theirs})"
        elif theirs == "testing":
            pytest.fail(f"{name} imports the fake runtime {target}")
        else:
            assert RANK[theirs] <= RANK[mine], (
                f"{name} ({mine}) imports {target} ({theirs}): a wrong-way import"
            )


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(RUNTIME_GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(RUNTIME_GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if layer(n) in NEVER_PYTEST or n.endswith(NEVER_PYTEST))
)
def test_lower_layers_and_the_status_cli_never_import_pytest(name: str) -> None:
    used = {m.split(".")[0] for m in imports_of(MODULES[name])} & {"pytest", "_pytest"}
    assert not used, f"{name} imports {sorted(used)}"


def test_no_private_pytest_import() -> None:
    offenders = [
        name for name, path in MODULES.items() if any(m.startswith("_pytest") for m in imports_of(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    if name in LONG_MODULES:
        assert LONG_MODULES[name] in MODULES[name].read_text()[:2000], (
            f"{name}: state why it is long at its top"
        )
    else:
        assert lines <= MAX_LINES, (
            f"{name} has {lines} lines (over {MAX_LINES}): split it, or state why at its top"
        )


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    root = tmp_path / "pytest_neuron"
    (root / "core").mkdir(parents=True)
    (root / "plugins").mkdir()
    (root / "plugins" / "keys.py").write_text("")
    module = root / "core" / "coreset.py"
    module.write_text("def f():\n    from ..plugins import keys\n    import pytest\n")
    found = imports_of(module, root)
    assert found == {"pytest_neuron.plugins", "pytest_neuron.plugins.keys", "pytest"}
    assert RANK[layer("pytest_neuron.plugins.keys")] > RANK[layer(module_name(module, root))]
