"""The docs cannot point into the void, and the package graph in docs/architecture.md cannot go stale.

Checked over every markdown file of the repository (README.md, docs/*.md, the READMEs under examples/ and tests/),
the docstrings and comments of every Python file in trl_latent/, tests/, benchmarks/ and examples/, and the comments of
the recipe scripts and YAMLs:

- a relative markdown link (link text in brackets, then its target in parentheses) resolves to a file or folder (an
  anchor is dropped and the file part must exist; targets are relative to the file that holds them, for Python files
  to the repository root);
- a repository path (`docs/...`, `trl_latent/...`, `examples/...`, `benchmarks/...`, `tests/...`, or a subpackage path
  such as `training/stages.py`, read under trl_latent/) exists;
- a dotted module path (`trl_latent.experiments.shapes.task_data`, `trl_latent.modeling.real_shapes.REAL_SHAPES`) names a module of the
  package, and the first name after the module is defined there;
- `docs/architecture.md section N` (or `sections N and M`) has a heading `## N.` in that file, and
  `docs/<page>.md "<Heading>"` names a heading of that page.

A failure lists every broken reference as `file:line: reference (problem)`.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.fixtures.layout import imported_names
from tests.fixtures.paths import PACKAGE, ROOT

PYTHON_DIRS = ("trl_latent", "tests", "benchmarks", "examples")
SKIP_DIRS = {".venv", ".git", ".pytest_cache", ".ruff_cache", "outputs", "__pycache__"}
ARCHITECTURE = "docs/architecture.md"

# A markdown link or image: its target is the text in parentheses (no spaces; an optional title is cut off).
MARKDOWN_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A repository path: a top folder, then path characters. Not inside a longer path (`src/tests/...`) or a URL.
REPO_PATH = re.compile(r"(?<![\w./:-])((?:docs|trl_latent|examples|benchmarks|tests)/[\w./-]*)")
# A path inside the package written without its `trl_latent/` prefix (`training/stages.py`).
SUBPACKAGES = ("modeling", "training", "data", "rewards", "metrics", "planning", "commands", "experiments")
SUBPACKAGE_PATH = re.compile(rf"(?<![\w./:-])((?:{'|'.join(SUBPACKAGES)})/[\w./-]*\.py)\b")
DOTTED_MODULE = re.compile(r"(?<![\w.])trl_latent(?:\.[A-Za-z_]\w*)+")
# `docs/architecture.md section 3`, "`docs/architecture.md` section 8", `docs/architecture.md sections 3 and 4`,
# across a line break and a comment's `#`.
SECTION = re.compile(r"docs/architecture\.md`?[\s#]+sections?[\s#]+(\d+)(?:(?:[\s#]*,[\s#]*|[\s#]+and[\s#]+)(\d+))*")
SECTION_NUMBERS = re.compile(r"\d+")
# `docs/model.md "World-model output"`: a page and one of its headings.
QUOTED_HEADING = re.compile(r"(docs/[\w-]+\.md)`?\s+\"([^\"\n]+)\"")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


# ----------------------------------------------------------------------------------------------- what is scanned
def _walk(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]))


def markdown_files(root: Path = ROOT) -> list[Path]:
    return [p for p in _walk(root, "*.md") if not any(part.endswith(".egg-info") for part in p.parts)]


def python_files(root: Path = ROOT) -> list[Path]:
    return [p for top in PYTHON_DIRS if (root / top).is_dir() for p in _walk(root / top, "*.py")]


def script_files(root: Path = ROOT) -> list[Path]:
    """The recipe scripts and configs under examples/ (their `#` comments are scanned)."""
    if not (root / "examples").is_dir():
        return []
    return [p for ext in ("*.sh", "*.yaml", "*.yml") for p in _walk(root / "examples", ext)]


def python_prose(source: str) -> list[str]:
    """The lines of a Python source with only its docstrings and comments kept (other text blanked), so a match's
    offset still gives its line number."""
    lines = source.splitlines()
    kept = [""] * len(lines)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                for i in range(first.lineno - 1, first.end_lineno):
                    kept[i] = lines[i]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0] - 1
            kept[row] = (kept[row] + "  " + token.string) if kept[row] else token.string
    return kept


def script_prose(source: str) -> list[str]:
    return [line[line.index("#") :] if "#" in line else "" for line in source.splitlines()]


def markdown_prose(source: str) -> list[str]:
    return source.splitlines()


# ------------------------------------------------------------------------------------------------ what resolves
def headings(path: Path) -> list[str]:
    """The headings of a markdown file (`## 2. The model`, ...), outside fenced code."""
    found, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append(match.group(1) + " " + match.group(2))
    return found


def _defined_names(path: Path) -> set[str]:
    """Names a module defines at top level (functions, classes, assignments, imports, `__all__`, lazy exports)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}
            if isinstance(node.value, (ast.List, ast.Tuple, ast.Dict)):  # __all__, _EXPORTS
                keys = node.value.keys if isinstance(node.value, ast.Dict) else node.value.elts
                names |= {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    names |= {(alias.asname or alias.name).split(".")[0] for alias in sub.names}
    return names


def dotted_problem(name: str, root: Path) -> str | None:
    """Why a dotted `trl_latent.<module>.<name>` does not resolve (None when it does): the longest prefix that is a
    module of the package, then the first remaining name must be defined in that module."""
    parts = name.split(".")
    where = root / parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if (where / part / "__init__.py").exists():
            where = where / part
        elif (where / f"{part}.py").exists():
            where = where / f"{part}.py"
        else:
            module = where / "__init__.py" if where.is_dir() else where
            if not module.exists() or part not in _defined_names(module):
                return f"no module or name {part!r} in {module.relative_to(root)}"
            return None
        if where.suffix == ".py" and i < len(parts) - 1:
            rest = parts[i + 1]
            return None if rest in _defined_names(where) else f"{rest!r} is not defined in {where.relative_to(root)}"
    return None


def _line(offset: int, starts: list[int]) -> int:
    """The 1-based line of a text offset, given each line's start offset."""
    lo, hi = 0, len(starts) - 1
    while lo < hi:  # last line start <= offset
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if starts[mid] <= offset else (lo, mid - 1)
    return lo + 1


def broken_references(path: Path, prose: list[str], root: Path = ROOT) -> list[str]:
    """Every broken reference in `prose` (the scanned lines of `path`), as `file:line: reference (problem)`."""
    text = "\n".join(prose)
    starts, position = [], 0
    for line in prose:
        starts.append(position)
        position += len(line) + 1
    rel = path.relative_to(root)
    base = path.parent if path.suffix == ".md" else root
    broken = []

    def report(offset: int, reference: str, problem: str) -> None:
        line = _line(offset, starts)
        broken.append((line, offset, f"{rel}:{line}: {reference} ({problem})"))

    links = [match.span(1) for match in MARKDOWN_LINK.finditer(text)]
    for match in MARKDOWN_LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#") or not target.split("#")[0]:
            continue  # a URL, a mail address or an anchor of this page
        file_part = target.split("#")[0]
        if not ((base / file_part).exists() or (root / file_part).exists()):
            report(match.start(), f"[...]({target})", "no such file")
    for match in REPO_PATH.finditer(text):
        if any(start <= match.start() < end for start, end in links):
            continue  # checked as a link
        target = match.group(1).rstrip(".-")
        if not (root / target.rstrip("/")).exists():
            report(match.start(), target, "no such file")
    for match in SUBPACKAGE_PATH.finditer(text):
        target = match.group(1)
        if not ((root / "trl_latent" / target).exists() or (root / target).exists()):
            report(match.start(), target, "no such file in trl_latent/")
    for match in DOTTED_MODULE.finditer(text):
        if problem := dotted_problem(match.group(0), root):
            report(match.start(), match.group(0), problem)
    architecture = root / ARCHITECTURE
    sections = headings(architecture) if architecture.exists() else []
    for match in SECTION.finditer(text):
        for number in SECTION_NUMBERS.findall(match.group(0).split("sections", 1)[-1].split("section", 1)[-1]):
            if not any(h.startswith(f"## {number}. ") for h in sections):
                report(match.start(), f"{ARCHITECTURE} section {number}", f"no heading '## {number}.' there")
    for match in QUOTED_HEADING.finditer(text):
        page, title = match.group(1), match.group(2)
        if (root / page).exists() and not any(
            h.split(" ", 1)[1].lower() == title.lower() for h in headings(root / page)
        ):
            report(match.start(), f'{page} "{title}"', "no such heading")
    return [message for _, _, message in sorted(broken)]


def all_broken_references(root: Path = ROOT) -> list[str]:
    broken = []
    for path in markdown_files(root):
        broken += broken_references(path, markdown_prose(path.read_text()), root)
    for path in python_files(root):
        broken += broken_references(path, python_prose(path.read_text()), root)
    for path in script_files(root):
        broken += broken_references(path, script_prose(path.read_text()), root)
    return broken


# ------------------------------------------------------------------------------------------------------ the tests
def test_every_reference_resolves():
    broken = all_broken_references()
    assert not broken, f"{len(broken)} broken reference(s):\n" + "\n".join(broken)


def test_the_checker_catches_planted_breaks(tmp_path):
    """The checker itself, on a small planted repository: each kind of broken reference is reported with its line."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "trl_latent" / "training").mkdir(parents=True)
    (tmp_path / "trl_latent" / "__init__.py").write_text("")
    (tmp_path / "trl_latent" / "training" / "__init__.py").write_text("")
    (tmp_path / "trl_latent" / "training" / "stages.py").write_text("STAGES = {}\n")
    (tmp_path / "docs" / "architecture.md").write_text("# A\n\n## 1. One\n\n```\n## 2. Not a heading\n```\n")
    (tmp_path / "docs" / "ok.md").write_text("# Ok\n\n## Good heading\n")

    # The planted pages name their docs folder as "@/" and it is spelled out only here, so that this test's fixtures are
    # not themselves references to pages the repository lacks.
    def planted(text: str) -> str:
        return text.replace("@/", "docs" + "/")

    page = tmp_path / "README.md"
    page.write_text(
        planted(
            "[fine](@/ok.md#good-heading) [gone](@/gone.md) [web](https://example.org)\n"
            "see @/ok.md and @/missing.md, trl_latent/training/stages.py and trl_latent/training/baseline.py\n"
            "training/stages.py, training/gone.py; trl_latent.training.stages.STAGES, trl_latent.training.baseline,\n"
            "trl_latent.training.stages.NOPE; @/architecture.md section 1, @/architecture.md sections 1 and 2;\n"
            '@/ok.md "Good heading", @/ok.md "Bad heading"\n'
        )
    )
    source = tmp_path / "trl_latent" / "training" / "mod.py"
    source.write_text(
        planted('"""Docstring: @/architecture.md\nsection 3."""\n\nX = "@/not-checked.md"  # comment: @/gone2.md\n')
    )
    broken = all_broken_references(tmp_path)
    assert broken == [
        planted(line)
        for line in (
            "README.md:1: [...](@/gone.md) (no such file)",
            "README.md:2: @/missing.md (no such file)",
            "README.md:2: trl_latent/training/baseline.py (no such file)",
            "README.md:3: training/gone.py (no such file in trl_latent/)",
            "README.md:3: trl_latent.training.baseline (no module or name 'baseline' in trl_latent/training/__init__.py)",
            "README.md:4: trl_latent.training.stages.NOPE ('NOPE' is not defined in trl_latent/training/stages.py)",
            "README.md:4: @/architecture.md section 2 (no heading '## 2.' there)",
            'README.md:5: @/ok.md "Bad heading" (no such heading)',
            "trl_latent/training/mod.py:1: @/architecture.md section 3 (no heading '## 3.' there)",
            "trl_latent/training/mod.py:4: @/gone2.md (no such file)",
        )
    ], broken


# --------------------------------------------------------------------------------------------- the package graph
def package_graph() -> dict[str, set[str]]:
    """Top-level subpackage or module of trl_latent -> the other top-level ones its import statements name."""
    tops = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} - {"__init__"}
    graph: dict[str, set[str]] = {top: set() for top in tops}
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top == "__init__":
            continue  # the package's lazy public API, not a layer
        for name in imported_names(path):
            parts = name.split(".")
            if parts[0] == PACKAGE.name and len(parts) > 1 and parts[1] in tops and parts[1] != top:
                graph[top].add(parts[1])
    return graph


def drawn_graph() -> dict[str, set[str]]:
    """The fenced block of docs/architecture.md whose lines are all `name -> a, b` (or `name -> (nothing)`)."""
    text = (ROOT / ARCHITECTURE).read_text()
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    drawn = [b for b in blocks if b.strip() and all(re.match(r"^[\w.]+ -> ", line) for line in b.strip().splitlines())]
    assert len(drawn) == 1, f"{ARCHITECTURE} must hold exactly one package-graph block (lines `name -> a, b`)"
    graph = {}
    for line in drawn[0].strip().splitlines():
        name, _, targets = line.partition(" -> ")
        targets = targets.split("#")[0].strip()
        graph[name.strip()] = set() if targets == "(nothing)" else {t.strip() for t in targets.split(",")}
    return graph


def test_package_graph_in_architecture_doc_matches_the_code():
    code, drawn = package_graph(), drawn_graph()
    assert drawn == code, f"the package graph in {ARCHITECTURE} is stale; the code's imports give:\n" + "\n".join(
        f"{name} -> {', '.join(sorted(deps)) or '(nothing)'}" for name, deps in sorted(code.items())
    )


def test_no_library_package_imports_the_experiment():
    offending = [name for name, deps in package_graph().items() if "experiments" in deps and name != "cli"]
    assert not offending, offending


@pytest.mark.parametrize("number", range(1, 9))
def test_architecture_has_numbered_sections(number):
    assert any(h.startswith(f"## {number}. ") for h in headings(ROOT / ARCHITECTURE)), f"## {number}. missing"
