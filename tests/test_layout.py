"""The house rule: the library (what a TRL user installs and imports) never imports the embedded experiment
(`trl_latent.experiments`: the shapes task, its reward, the demo pipeline, the study and its reports).

Checked twice: statically (every import statement of every library module, relative imports resolved) and at run time
(importing every library module in a fresh interpreter leaves `trl_latent.experiments` unloaded)."""

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trl_latent"
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
    "__init__.py",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> list[Path]:
    files = []
    for entry in LIBRARY:
        target = PACKAGE / entry
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return files


def imported_names(path: Path) -> list[str]:
    """Every module an import statement in `path` names, relative imports resolved against its package."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names += [stem] + [f"{stem}.{alias.name}" for alias in node.names]
    return names


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
    source = "from ..experiments.task import tokenizer_corpus\nfrom . import losses\n"
    tree_names = []
    # Same resolution as imported_names, on a synthetic source placed at a library path.
    original = Path.read_text
    try:
        Path.read_text = lambda self, *a, **k: source if self == fake else original(self, *a, **k)
        tree_names = imported_names(fake)
    finally:
        Path.read_text = original
    assert "trl_latent.experiments.task" in tree_names and "trl_latent.training.losses" in tree_names


def test_importing_the_whole_library_leaves_the_harness_unloaded():
    modules = [_module_name(path) for path in library_modules()]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m == {HARNESS!r} or m.startswith({HARNESS + '.'!r}))\n"
        "print(len(sys.modules), loaded)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_moved_modules_still_import_with_a_deprecation_warning():
    import importlib

    import trl_latent

    for old, new in trl_latent._MOVED_MODULES.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
