"""The house rule: the library (what a TRL user installs and imports) never imports the embedded experiment
(`trl_latent.experiments`: the shapes task, its reward, the demo pipeline, the study and its reports).

Checked twice: statically (every import statement of every library module, relative imports resolved) and at run time
(importing every library module in a fresh interpreter leaves `trl_latent.experiments` unloaded)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.layout import imported_names, module_name
from tests.fixtures.paths import PACKAGE, TESTS

HARNESS = "trl_latent.experiments"
# The library: its subpackages and modules. `cli.py` is the entry point that registers both sides' commands.
LIBRARY = (
    "modeling",
    "training",
    "data",
    "rewards",
    "metrics",
    "planning",
    "commands",
    "evaluation.py",
    "paper.py",
    "__init__.py",
)


def library_modules() -> list[Path]:
    files = []
    for entry in LIBRARY:
        target = PACKAGE / entry
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def test_every_package_module_is_library_harness_or_entry_point():
    """A new top-level module must be placed on one side of the rule (so the rule cannot be dodged by accident)."""
    top = {p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert top == set(LIBRARY) | {"experiments", "cli.py"}


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_does_not_import_the_harness(path):
    offending = [name for name in imported_names(path) if name == HARNESS or name.startswith(HARNESS + ".")]
    assert not offending, f"{path.relative_to(PACKAGE)} imports the embedded experiment: {offending}"


def test_the_static_check_sees_relative_imports(tmp_path):
    """The checker itself: a relative import of the harness from a library module is caught."""
    fake = PACKAGE / "training" / "latent_grpo_trainer.py"
    source = "from ..experiments.shapes.task_data import tokenizer_corpus\nfrom . import losses\n"
    tree_names = []
    # Same resolution as imported_names, on a synthetic source placed at a library path.
    original = Path.read_text
    try:
        Path.read_text = lambda self, *a, **k: source if self == fake else original(self, *a, **k)
        tree_names = imported_names(fake)
    finally:
        Path.read_text = original
    assert "trl_latent.experiments.shapes.task_data" in tree_names and "trl_latent.training.losses" in tree_names


def _assert_harness_unloaded_after(imports: str) -> None:
    """Run `imports` in a fresh interpreter, then check that no module of the experiments was loaded."""
    code = (
        f"import sys\n{imports}\n"
        f"loaded = sorted(m for m in sys.modules if m == {HARNESS!r} or m.startswith({HARNESS + '.'!r}))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_importing_the_whole_library_leaves_the_harness_unloaded():
    modules = [module_name(path) for path in library_modules()]
    _assert_harness_unloaded_after(f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)")


def test_the_public_names_load_without_the_experiments():
    """`import trl_latent` and every name of its `__all__` resolve from the library alone."""
    _assert_harness_unloaded_after(
        "import trl_latent\nvalues = [getattr(trl_latent, name) for name in trl_latent.__all__]\nassert len(values) >= 20"
    )


def test_no_old_module_path_is_served():
    """No redirect shims: a module path the package does not hold does not import."""
    import importlib

    for old in ("trl_latent.data.synthetic", "trl_latent.rewards.rubric", "trl_latent.pipeline", "trl_latent.study"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level or inside a function), every module of the
    package, experiments included."""
    modules = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path):
            parts = name.split(".")
            for end in range(len(parts), 0, -1):  # the longest prefix that is a module: `pkg.mod.Class` -> `pkg.mod`
                if ".".join(parts[:end]) in modules:
                    targets.add(".".join(parts[:end]))
                    break
        graph[module] = targets - {module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]] and circles({"a": {"b"}, "b": set()}) == []


def test_every_library_module_is_imported_by_a_test_file():
    """Each module of the library (not `__init__`, not the experiments) is named by an import in some test file."""
    tests = TESTS
    imported = set()
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    untested = [
        module_name(path)
        for path in library_modules()
        if path.name != "__init__.py" and module_name(path) not in imported
    ]
    assert not untested, f"library modules no test file imports: {untested}"
