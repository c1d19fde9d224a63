"""The package's layout and the test suite's.

The house rule: the library (what a TRL user installs and imports) never imports the embedded experiment
(`trl_latent.experiments`: the shapes task, its reward, the demo pipeline, the study and its reports). Checked twice:
statically (every import statement of every library module, relative imports resolved) and at run time (importing
every library module in a fresh interpreter leaves `trl_latent.experiments` unloaded). The package has no import
circle.

The suite mirrors the package: `trl_latent/<pkg>/<mod>.py` is tested by `tests/<pkg>/test_<mod>.py`, which imports
it (a package's `__init__.py` by `test_init.py` when it holds code beyond re-exports); every other test file is a
check of the project as a whole, in `tests/project/`; shared helpers live in `tests/fixtures/`. Every test folder is a
package, and no test file imports another."""

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


# ------------------------------------------------------------------------------------------------ the test suite
def has_code(init: Path) -> bool:
    """Whether a package's `__init__.py` holds more than a docstring, imports, `__all__` and `TYPE_CHECKING` imports."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]:
            continue
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            continue
        return True
    return False


def modules_to_test() -> list[Path]:
    """Every module of the package, the experiments included, that must have a test file of its own."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py" or has_code(p)]


def mirror(module: Path) -> Path:
    """`trl_latent/training/stages.py` -> `tests/training/test_stages.py`; `__init__.py` -> `test_init.py`."""
    relative = module.relative_to(PACKAGE)
    stem = "init" if module.name == "__init__.py" else module.stem
    return TESTS / relative.parent / f"test_{stem}.py"


def mirrored_module(test_file: Path) -> Path:
    """The module `test_file` tests by its path (the inverse of `mirror`)."""
    relative = test_file.relative_to(TESTS)
    stem = relative.stem.removeprefix("test_")
    return PACKAGE / relative.parent / ("__init__.py" if stem == "init" else f"{stem}.py")


def suite_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)


def imports_module(source: str, module: str) -> bool:
    """Whether an import statement of `source` (at any depth) imports `module`, for `trl_latent.training.stages`:
    `import trl_latent.training.stages`, `from trl_latent.training.stages import STAGES` or
    `from trl_latent.training import stages`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name == module for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module == module or any(f"{node.module}.{alias.name}" == module for alias in node.names):
                return True
    return False


def imported_test_modules(source: str) -> list[str]:
    """The test modules (`test_*`) an import statement of `source` names: `import test_x`, `from test_x import ...`,
    `from tests.data.test_x import ...`, `from tests.data import test_x`, `from .test_x import ...`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = "." * node.level + (node.module or "")
            names = [stem] + [f"{stem}.{alias.name}".replace("..", ".") for alias in node.names]
        else:
            continue
        found += [name for name in names if any(part.startswith("test_") for part in name.split("."))]
    return sorted(set(found))


def test_every_test_file_mirrors_a_module_or_checks_the_project():
    stray = []
    for path in suite_files():
        relative = path.relative_to(TESTS)
        if relative.parts[0] == "fixtures":
            stray.append(f"{relative} (tests/fixtures/ holds helpers, not tests)")
        elif relative.parts[0] != "project" and not mirrored_module(path).is_file():
            stray.append(
                f"{relative} (tests {mirrored_module(path).relative_to(PACKAGE.parent)}, which does not exist)"
            )
    assert not stray, "test files that mirror no module (move each to its module's place, or to tests/project/): " + (
        "; ".join(stray)
    )


@pytest.mark.parametrize("module", modules_to_test(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_module_has_a_test_file_that_imports_it(module):
    test_file = mirror(module)
    relative = test_file.relative_to(TESTS.parent)
    assert test_file.is_file(), f"{module.relative_to(PACKAGE.parent)} has no test file: write {relative}"
    assert imports_module(test_file.read_text(), module_name(module)), (
        f"{relative} does not import {module_name(module)}"
    )


def test_no_test_file_imports_another():
    """Whatever two test files share lives in tests/fixtures/ (or a conftest.py), never in one of them."""
    offending = {}
    for path in sorted(TESTS.rglob("*.py")):
        names = imported_test_modules(path.read_text())
        if names:
            offending[str(path.relative_to(TESTS.parent))] = names
    assert not offending, f"imports of test files (move what they share to tests/fixtures/): {offending}"


def test_every_test_folder_is_a_package():
    """So that `tests.training.test_stages` is a module name and two folders may both hold a `test_evaluate.py`."""
    folders = {p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_the_suite_checks_see_what_they_must():
    """The checkers themselves, on planted sources and paths."""
    assert imports_module("from trl_latent.training.stages import STAGES", "trl_latent.training.stages")
    assert imports_module("def f():\n    import trl_latent.training.stages\n", "trl_latent.training.stages")
    assert imports_module("from trl_latent.training import stages", "trl_latent.training.stages")
    assert not imports_module("from trl_latent.training import stages", "trl_latent.training.losses")
    assert not imports_module("from trl_latent.training.stages_table import X", "trl_latent.training.stages")
    assert imported_test_modules("from test_layout import PACKAGE") == ["test_layout", "test_layout.PACKAGE"]
    assert imported_test_modules("from tests.data import test_pretrain") == ["tests.data.test_pretrain"]
    assert imported_test_modules("from .test_x import y\nimport tests.project.test_docs") == [
        ".test_x",
        ".test_x.y",
        "tests.project.test_docs",
    ]
    assert imported_test_modules("from tests.fixtures.models import tiny_vlm\nimport pytest") == []
    stages = PACKAGE / "training" / "stages.py"
    assert mirror(stages) == TESTS / "training" / "test_stages.py" and mirrored_module(mirror(stages)) == stages
    assert mirror(PACKAGE / "__init__.py") == TESTS / "test_init.py" and has_code(PACKAGE / "__init__.py")
    assert not has_code(PACKAGE / "planning" / "__init__.py")  # imports and __all__ only
    assert (
        mirror(PACKAGE / "experiments" / "shapes" / "study.py") == TESTS / "experiments" / "shapes" / "test_study.py"
    )
