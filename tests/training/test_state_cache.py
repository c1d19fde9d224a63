"""Frozen-base states computed once per record and reused across steps, epochs, stages and health checks: the losses
equal those with recomputed states, and the base runs fewer times."""

import random

import pytest
import torch
from datasets import Dataset

from trl_latent.modeling import LatentActionModel
from trl_latent.modeling.tiny import tiny_lm, tiny_lm_path
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer
from trl_latent.training.state_cache import BaseStateCache, cached_encode

SMALL = dict(codebook_size=16, inverse_layers=1, policy_layers=1)


def _texts(n, seed=0):
    rng = random.Random(seed)
    words = ["red", "blue", "star", "circle", "left", "right", "big", "small", "one", "two"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(n)]


CORPUS = _texts(64, seed=5)


class BaseRuns:
    """Counts forward passes of the base's inner model."""

    def __init__(self, model):
        self.count = 0
        model.backbone.inner.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.count += 1


def config(tmp_path, name, **kwargs):
    kwargs = {
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "health_samples": 0,
        "save_strategy": "no",
        "seed": 0,
        **kwargs,
    }
    return LatentSFTConfig(str(tmp_path / name), use_cpu=True, bf16=False, report_to="none", **kwargs)


def build(path):
    torch.manual_seed(0)
    return LatentActionModel.from_base(path, **SMALL)


def logged(trainer, key):
    return torch.tensor([row[key] for row in trainer.state.log_history if key in row])


def run(model, args, **kwargs):
    runs = BaseRuns(model)
    trainer = LatentSFTTrainer(model, args, **kwargs)
    trainer.train()
    return trainer, runs.count


@pytest.mark.parametrize("stage", ["inverse_warmup", "policy_bc"])
def test_reused_states_give_the_same_losses_with_fewer_base_runs(tiny_cache, tmp_path, stage):
    """8 text records, batches of 4, 6 steps (3 epochs) on a text-only Llama: the base runs in the first epoch only."""
    path = tiny_lm_path("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="llama")
    tokenizer = tiny_lm("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="llama")[1]
    data = Dataset.from_dict({"text": _texts(8)})
    results = {}
    for cached in (False, True):
        model = build(path)
        args = config(tmp_path, f"{stage}-{cached}", stage=stage, cache_base_states=cached)
        trainer, base_runs = run(model, args, train_dataset=data, processing_class=tokenizer)
        key = "world/ce_paired" if stage == "inverse_warmup" else "policy/bc_paired"
        results[cached] = (logged(trainer, key), base_runs, model)
    (recomputed, runs_off, model_off), (reused, runs_on, model_on) = results[False], results[True]
    assert len(recomputed) == 6
    torch.testing.assert_close(reused, recomputed, rtol=1e-6, atol=1e-6)
    assert runs_off == 6 and runs_on == 2, (runs_off, runs_on)
    for (name, a), b in zip(model_off.named_parameters(), model_on.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_vision_language_joint_stage_reuses_both_runs(tiny_cache, tmp_path):
    """Qwen2.5-VL, joint stage: the image run (keyed by ids and pixels), the aligned text run and the text-only stream
    are all reused; the losses equal the recomputed ones."""
    from tests.fixtures.models import tiny_vlm
    from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset

    base, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    paired = synthetic_sft_dataset(4)
    text = Dataset.from_dict({"text": _texts(4)})
    results = {}
    for cached in (False, True):
        torch.manual_seed(0)
        model = LatentActionModel.from_base(base, **SMALL)
        args = config(tmp_path, f"joint-{cached}", stage="joint", cache_base_states=cached, max_steps=4,
                      per_device_train_batch_size=2)  # fmt: skip
        trainer, base_runs = run(model, args, train_dataset=paired, text_dataset=text, processing_class=processor)
        results[cached] = (logged(trainer, "world/ce_paired"), logged(trainer, "projector/nll_paired"), base_runs)
        model.base = None  # the next arm builds on the same base object
        del model
    (ce_off, nll_off, runs_off), (ce_on, nll_on, runs_on) = results[False], results[True]
    torch.testing.assert_close(ce_on, ce_off, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(nll_on, nll_off, rtol=1e-6, atol=1e-5)
    # Each step runs the base three times (image run, aligned text run, text-only stream); epoch 2 runs none.
    assert runs_off == 12 and runs_on == 6, (runs_off, runs_on)


def test_a_cache_shared_across_stages_and_health_checks(tiny_cache, tmp_path):
    path = tiny_lm_path("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="llama")
    tokenizer = tiny_lm("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="llama")[1]
    data = Dataset.from_dict({"text": _texts(8)})
    cache = BaseStateCache()
    model = build(path)
    args = config(tmp_path, "s1", stage="inverse_warmup", max_steps=2, health_samples=8)
    _, runs_1 = run(model, args, train_dataset=data, processing_class=tokenizer, state_cache=cache)
    assert runs_1 == 2 and len(cache) == 8  # the health check read the training records' stored states
    args = config(tmp_path, "s3", stage="joint", max_steps=2, health_samples=8)
    _, runs_3 = run(model, args, train_dataset=data, processing_class=tokenizer, state_cache=cache)
    assert runs_3 == 0  # same frozen base, same records: stage 3 never runs it
    # A changed base (stage 5 trains it) has another fingerprint: nothing stale is served.
    with torch.no_grad():
        model.backbone.final_norm.weight.add_(0.5)
    batch = LatentSFTTrainer(model, config(tmp_path, "x", stage="inverse_warmup"), train_dataset=data,
                             processing_class=tokenizer).data_collator([dict(r) for r in data.select(range(4))])  # fmt: skip
    fresh = BaseStateCache()
    cached_encode(model, fresh, batch["paired"])
    assert fresh.base_runs == 1
    expected = model.encode(batch["paired"]["input_ids"], batch["paired"]["attention_mask"]).states
    again = cached_encode(model, fresh, batch["paired"])
    mask = batch["paired"]["attention_mask"].bool()
    assert fresh.base_runs == 1 and torch.equal(again.states[mask], expected[mask])


def test_the_cache_is_bounded():
    cache = BaseStateCache(max_bytes=3 * 16 * 4)  # three records of 4 x 4 fp32 states
    for i in range(5):
        cache.put(str(i), torch.full((4, 4), float(i)))
    assert len(cache) == 3 and cache.bytes == 3 * 64 and cache.get("0") is None
    assert cache.get("2") is not None  # now the most recently used
    cache.put("5", torch.zeros(4, 4))
    assert cache.get("3") is None and cache.get("2") is not None
    cache.put("big", torch.zeros(100, 100))  # larger than the budget: not stored, nothing evicted
    assert cache.get("big") is None and len(cache) == 3
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        BaseStateCache(0)
