"""One home per option: a default the library defines is not restated as a literal elsewhere in the package, and no
list of names is written out twice. (Restated defaults drift apart: the reason this test exists.)"""

import ast
import dataclasses
import inspect
import sys
from collections import defaultdict

from tests.fixtures.paths import ROOT

PACKAGE = ROOT / "trl_latent"


def _literal(node):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None
    return value if isinstance(value, (int, float, str, tuple)) and not isinstance(value, bool) else None


def default_sites() -> dict[tuple[str, object], list[str]]:
    """(option name, literal default) -> where it is written: function parameters, dataclass fields (plain or
    `field(default=...)`) and argparse flags, over every module of the package."""
    sites = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE.parent))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
                for arg, default in pairs:
                    if (value := _literal(default)) is not None:
                        sites[arg.arg, value].append(f"{where}:{node.lineno}")
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                        value_node = stmt.value
                        if isinstance(value_node, ast.Call) and getattr(value_node.func, "id", "") == "field":
                            value_node = {k.arg: k.value for k in value_node.keywords}.get("default")
                        if value_node is not None and (value := _literal(value_node)) is not None:
                            sites[stmt.target.id, value].append(f"{where}:{stmt.lineno}")
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
                flag = _literal(node.args[0])
                default = {k.arg: k.value for k in node.keywords}.get("default")
                if isinstance(flag, str) and default is not None and (value := _literal(default)) is not None:
                    sites[flag.lstrip("-").replace("-", "_"), value].append(f"{where}:{node.lineno}")
    return sites


def library_options() -> dict[str, object]:
    """The options a user sets on the library's configs and main functions, with their defaults."""
    from trl_latent.evaluation import evaluate
    from trl_latent.modeling.configuration import LatentActionConfig
    from trl_latent.modeling.generation import latent_generate
    from trl_latent.planning.plan import make_plan
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.policy_loss_config import PolicyLossConfigMixin
    from trl_latent.training.stages import PRETRAIN_STAGE_NAMES

    options = {}
    for config in (LatentGRPOConfig, LatentSFTConfig, PolicyLossConfigMixin):
        own = set(config.__annotations__)
        options.update({f.name: f.default for f in dataclasses.fields(config) if f.name in own})
    options.update({name: getattr(LatentActionConfig, name) for name in LatentActionConfig.__annotations__})
    for function in (latent_generate, evaluate, make_plan):
        options.update(
            {
                name: p.default
                for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty
            }
        )
    assert PRETRAIN_STAGE_NAMES and {"codebook_size", "code_top_k", "world_sft_last_layers", "beta"} <= set(options)
    return {name: value for name, value in options.items() if isinstance(value, (int, float, str)) and value != ""}


# Names every seeded or sized function takes with a local meaning, not one option with one home.
LOCAL_NAMES = {"seed"}


def test_each_library_default_is_written_once():
    sites = default_sites()
    restated = {
        f"{name}={value!r}": where
        for name, value in library_options().items()
        if name not in LOCAL_NAMES and len(where := sites.get((name, value), [])) > 1
    }
    assert not restated, f"defaults written in more than one place (import the home's value instead): {restated}"


def test_no_list_of_names_is_written_twice():
    """A module-level tuple or list of two or more strings (splits, strategies, losses) is defined in one module."""
    homes = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List)):
                value = _literal(node.value) if isinstance(node.value, ast.Tuple) else None
                if value is None and isinstance(node.value, ast.List):
                    value = _literal(ast.Tuple(elts=node.value.elts, ctx=ast.Load()))
                if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, str) for v in value):
                    homes[value].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    twice = {value: where for value, where in homes.items() if len(where) > 1}
    assert not twice, f"lists defined in more than one place: {twice}"


def test_the_checks_see_a_restated_default(tmp_path, monkeypatch):
    """The scanner itself: a field restating `codebook_size=128` next to the config's own is two sites."""
    source = (
        "from dataclasses import dataclass, field\n@dataclass\nclass A:\n    codebook_size: int = field(default=128)\n"
    )
    (tmp_path / "trl_latent").mkdir()
    (tmp_path / "trl_latent" / "a.py").write_text(source)
    (tmp_path / "trl_latent" / "b.py").write_text("def f(codebook_size=128):\n    pass\nSPLITS = ('a', 'b')\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "trl_latent")
    assert len(default_sites()["codebook_size", 128]) == 2
