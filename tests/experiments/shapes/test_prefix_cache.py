"""`experiments.shapes.prefix_cache`: the saved prefixes' keys follow what determines each prefix."""

from trl_latent.experiments.shapes.pipeline import PipelineConfig
from trl_latent.experiments.shapes.prefix_cache import PrefixCache
from trl_latent.experiments.shapes.study import Cell


def test_prefix_keys_follow_what_determines_each_prefix(tmp_path):
    cache, config = PrefixCache(tmp_path, tag="t"), PipelineConfig.quick()
    other_loss = Cell("dapo", "token", 0).config(config)
    no_cycle = Cell("grpo", "latent", 0, "no_cycle_loss").config(config)
    # The loss never changes a prefix; latent switches change the latent stages only; the seed changes everything.
    for phase in ("base", "token_sft", "token_sft_text", "latent/joint", "latent/world_sft"):
        assert cache.entry(phase, other_loss).path == cache.entry(phase, config).path
    assert cache.entry("token_sft", no_cycle).path == cache.entry("token_sft", config).path
    assert cache.entry("latent/joint", no_cycle).path != cache.entry("latent/joint", config).path
    assert cache.entry("base", Cell("grpo", "token", 1).config(config)).path != cache.entry("base", config).path
    # Stages 1-4 do not read the task-SFT budget; stage 5 does.
    longer_sft = PipelineConfig.quick(task_sft_steps=9)
    assert cache.entry("latent/policy_bc", longer_sft).path == cache.entry("latent/policy_bc", config).path
    assert cache.entry("latent/world_sft", longer_sft).path != cache.entry("latent/world_sft", config).path
    assert PrefixCache(tmp_path, tag="u").entry("base", config).path != cache.entry("base", config).path
