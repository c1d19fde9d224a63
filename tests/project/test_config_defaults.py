"""One source of truth for every option: each library config field has one default (the one its docstring states),
the derived per-stage options and fallbacks take the config's, the library defaults are the paper's and the authors'
code, the embedded job's different values are listed overrides with a reason and a command, and every Qwen recipe
stage resolves to the authors' world-output schedule and argmax behaviour cloning."""

import re
from dataclasses import MISSING, fields

import pytest

from tests.fixtures.paths import ROOT
from trl_latent.experiments.shapes.pipeline import PipelineConfig, embedded_overrides, library_default, library_kwargs
from trl_latent.experiments.shapes.prefix_cache import PHASE_READS, PrefixCache, phase_fields
from trl_latent.modeling.configuration import LatentActionConfig
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import STAGE_OPTION_FIELDS, StageOptions
from trl_latent.training.stages import STAGES, WORLD_OUTPUT_SCHEDULES, resolve_stage

LIBRARY_CONFIGS = (LatentSFTConfig, LatentGRPOConfig, LatentActionConfig)
DOCUMENTED_DEFAULT = re.compile(r"^\s{8}(\w+) \(`[^`]*`, \*optional\*, defaults to `([^`]*)`\)", re.MULTILINE)


def documented_defaults(config_class) -> dict[str, str]:
    return dict(DOCUMENTED_DEFAULT.findall(config_class.__doc__))


def same_default(text: str, value) -> bool:
    """The docstring's `defaults to` text and the field's default say the same value."""
    if isinstance(value, bool) or value is None:
        return text == str(value)
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text.strip("'\"") == str(value)


@pytest.mark.parametrize("config_class", LIBRARY_CONFIGS, ids=lambda c: c.__name__)
def test_each_documented_default_is_the_fields_default(config_class):
    documented = documented_defaults(config_class)
    assert len(documented) >= 5, f"{config_class.__name__}'s docstring lists too few defaults to check"
    wrong = {}
    for name, text in documented.items():
        actual = library_default(config_class, name)
        if not same_default(text, actual):
            wrong[name] = (text, actual)
    assert not wrong, f"{config_class.__name__}: docstring default vs field default: {wrong}"


def test_the_check_sees_a_second_default():
    """The docstring parser really reads the defaults: a planted contradiction is found."""
    planted = 'bc_target (`str`, *optional*, defaults to `"soft"`):'
    doc = LatentSFTConfig.__doc__.replace('bc_target (`str`, *optional*, defaults to `"argmax"`):', planted)
    assert planted in doc and dict(DOCUMENTED_DEFAULT.findall(doc))["bc_target"] != repr(LatentSFTConfig.bc_target)


def test_library_defaults_are_the_papers():
    config = LatentSFTConfig("out", use_cpu=True, report_to="none")
    assert config.world_output_schedule == "minus_base_then_merge_delta" and config.bc_target == "argmax"
    assert config.world_sft_codes == "policy" and config.idm_entropy == "per_step"
    assert (config.entropy_weight, config.projector_weight, config.cycle_weight) == (1e-3, 1e-5, 1e-5)
    action = LatentActionConfig()
    assert (action.codebook_size, action.inverse_layers, action.policy_layers, action.merge_blocks) == (128, 4, 8, 2)
    assert action.gumbel_temperature == 2.0 and action.world_output == "merge_delta"  # the inference form
    rl = LatentGRPOConfig("out", use_cpu=True, report_to="none")
    assert (rl.code_top_k, rl.code_temperature, rl.beta) == (32, 1.0, 0.01)


def test_stage_options_are_derived_from_the_config():
    assert StageOptions() == StageOptions.from_config(LatentSFTConfig("out", use_cpu=True, report_to="none"))
    for name in STAGE_OPTION_FIELDS:
        assert getattr(StageOptions(), name) == library_default(LatentSFTConfig, name), name


def test_the_stage_tables_fallback_schedule_is_the_configs():
    """`resolve_stage` on an object without the schedule field uses the same schedule a default config has."""

    class Bare:
        use_text_only = use_projector = use_cycle_loss = True

    for name in ("inverse_warmup", "joint", "world_sft"):
        bare = Bare()
        bare.stage = name
        config = LatentSFTConfig("out", stage=name, use_cpu=True, report_to="none")
        assert resolve_stage(bare).world_output == resolve_stage(config).world_output


def test_embedded_overrides_are_listed_with_a_reason_and_a_command():
    from trl_latent.experiments.commands import _field_overrides
    from trl_latent.modeling.tiny import TINY_SPECS

    root = ROOT
    makefile = (root / "Makefile").read_text()
    base = TINY_SPECS[PipelineConfig().size]  # the embedded job's base
    overrides = embedded_overrides()
    assert set(overrides) == {"codebook_size", "inverse_layers", "policy_layers", "world_output_schedule"}
    for name, (_, default, value, why, command) in overrides.items():
        assert value != default, f"{name}: an override equal to the library default is no override"
        # The reason is the base's size, stated as the base has it, or a measurement (its figures); a doc it cites
        # shows every figure it quotes.
        numbers = re.findall(r"\d+\.\d+", why)
        if why.startswith("sized for the tiny base"):
            stated = {
                "hidden size": re.findall(r"hidden size (\d+)", why),
                "layers": re.findall(r"\((\d+) layers\)", why),
            }
            assert any(stated.values()), f"{name}: sized for which size? {why!r}"
            for hidden in stated["hidden size"]:
                assert int(hidden) == base.hidden_size, f"{name}: says hidden size {hidden}, the base has {base}"
            for layers in stated["layers"]:
                assert int(layers) == base.num_hidden_layers, f"{name}: says {layers} layers, the base has {base}"
        else:
            assert numbers, f"{name}: no size and no measurement: {why!r}"
        for doc in re.findall(r"docs/[\w/]+\.md", why):
            text = (root / doc).read_text()
            assert numbers and not [n for n in numbers if n not in text], f"{name}: {doc} does not show {numbers}"
        # The command exists: a Makefile target, a repository script given only options it has, or the demo with
        # `--set` of real fields, this override's among them.
        words = command.split()
        if words[0] == "make":
            assert len(words) == 2 and re.search(rf"^{words[1]}:", makefile, flags=re.M), f"{name}: {command}"
        elif words[0] == "python":
            script = (root / words[1]).read_text()
            options = [w for w in words[2:] if w.startswith("--")]
            assert options and all(f'"{o}"' in script for o in options), f"{name}: {command}"
        else:
            assert words[:2] == ["trl-latent", "demo"], f"{name}: {command}"
            sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
            assert name in _field_overrides(sets), f"{name}: {command} does not set it"
    assert overrides["world_output_schedule"][1:3] == ("minus_base_then_merge_delta", "merge_delta")
    assert "bc_target" not in overrides  # the experiment clones argmax codes, the library default


def test_fields_that_feed_a_library_config_default_to_the_librarys_unless_overridden():
    overrides = embedded_overrides()
    fed = [spec for spec in fields(PipelineConfig) if spec.metadata.get("feeds") is not None]
    assert len(fed) >= 15
    for spec in fed:
        expected = (
            overrides[spec.name][2] if spec.name in overrides else library_default(spec.metadata["feeds"], spec.name)
        )
        assert spec.default == expected == getattr(PipelineConfig(), spec.name), spec.name
    kwargs = library_kwargs(PipelineConfig(), LatentSFTConfig)
    LatentSFTConfig("out", use_cpu=True, report_to="none", **kwargs)  # every fed name is a real field
    assert kwargs["world_output_schedule"] == "merge_delta" and kwargs["bc_target"] == "argmax"


def test_cache_keys_come_from_field_metadata():
    config = PipelineConfig.quick()
    base, token, stage1, stage5 = (
        set(phase_fields(p, config)) for p in ("base", "token_sft", "latent/inverse_warmup", "latent/world_sft")
    )
    assert {"seed", "pretrain_steps", "n_eval"} <= base and not base & {"codebook_size", "task_sft_steps", "loss"}
    assert "task_sft_steps" in token and "codebook_size" not in token
    assert {"codebook_size", "bc_target", "world_output_schedule"} <= stage1 and "task_sft_steps" not in stage1
    assert {"task_sft_steps", "world_sft_codes", "world_delta_scale"} <= stage5 and "n_eval" not in stage5
    rl_only = {"loss", "rl_steps", "code_top_k", "beta", "cache_dir", "threads"}
    assert not rl_only & set().union(*(phase_fields(p, config) for p in PHASE_READS))
    cache = PrefixCache("unused")
    changed = PipelineConfig.quick(bc_target="soft")
    assert cache.key("latent/policy_bc", config) != cache.key("latent/policy_bc", changed)
    assert cache.key("token_sft", config) == cache.key("token_sft", changed)
    for spec in fields(PipelineConfig):
        assert spec.metadata.get("reads"), f"{spec.name} declares no reads"
        assert spec.default is not MISSING or spec.default_factory is not MISSING


RECIPES = ROOT / "examples" / "recipes"


@pytest.mark.parametrize(
    "path",
    sorted(p for p in RECIPES.rglob("*.yaml") if p.stem[0] in "12345"),
    ids=lambda p: p.relative_to(RECIPES).as_posix(),
)
def test_recipe_stages_resolve_to_the_authors_schedule_and_argmax_cloning(path):
    from trl_latent.commands.parsing import parse
    from trl_latent.commands.sft import PROG, make_parser

    _, config, _ = parse(make_parser("latent"), ["--config", str(path), "--use_cpu", "true", "--bf16", "false"], PROG)
    plan = resolve_stage(config)
    assert config.world_output_schedule == "minus_base_then_merge_delta" and config.bc_target == "argmax"
    if STAGES[config.stage].world_output is not None:
        assert plan.world_output == WORLD_OUTPUT_SCHEDULES["minus_base_then_merge_delta"][config.stage]
    assert plan.world_output == {"inverse_warmup": "residual_minus_base", "joint": "residual_minus_base"}.get(
        config.stage, "merge_delta" if config.stage == "world_sft" else None
    )


def test_docs_table_of_overrides_is_the_code():
    text = (ROOT / "docs" / "stages.md").read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| `(\w+)\.(\w+)` \| `([^`]*)` \| `([^`]*)` \| (.*) \| `([^`]*)` \|$", line)
        if match:
            source, name, default, value, why, command = match.groups()
            rows[name] = (source, default, value, why, command)
    expected = {
        name: (source, str(default), str(value), why, command)
        for name, (source, default, value, why, command) in embedded_overrides().items()
    }
    assert rows == expected
