"""Matched RL arms: the learning rate chosen by a KL budget, on planted arms and on a tiny real token-GRPO run."""

import doctest
import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from trl_latent.experiments import kl_budget, verdicts
from trl_latent.experiments.kl_budget import (
    KLProbe,
    choose_learning_rate,
    final_kl,
    relative_weight_change,
    snapshot,
)
from trl_latent.experiments.shapes.models import tiny_lm
from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer


@pytest.mark.parametrize("module", [kl_budget, verdicts])
def test_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0


def _planted(scale):
    calls = []

    def probe(lr):
        calls.append(lr)
        return KLProbe(lr, kl=scale * lr, weight_change=lr)

    return probe, calls


def test_search_goes_up_down_and_bisects():
    probe, calls = _planted(100.0)  # KL 0.01-0.05 for rates 1e-4..5e-4: up from 1e-5 by x3
    choice = choose_learning_rate(probe, budget=(0.01, 0.05), start=1e-5, factor=3.0)
    assert choice.within and calls == pytest.approx([1e-5, 3e-5, 9e-5, 2.7e-4])
    assert choice.learning_rate == pytest.approx(2.7e-4)
    probe, calls = _planted(1e4)  # too hot at the start: down
    choice = choose_learning_rate(probe, budget=(0.01, 0.05), start=1e-4, factor=3.0)
    assert choice.within and choice.learning_rate == pytest.approx(1e-4 / 27)  # KL 1, 0.33, 0.11, then 0.037
    # A step that jumps over the budget is bisected in log space.
    probe, calls = _planted(1.0)  # inside for rates 0.01-0.05; x10 steps jump from 0.001 to 0.1
    choice = choose_learning_rate(probe, budget=(0.01, 0.05), start=1e-3, factor=100.0)
    assert calls[:2] == pytest.approx([1e-3, 1e-1]) and calls[2] == pytest.approx(1e-2)
    assert choice.within and 0.01 <= choice.probes[-1].kl <= 0.05
    # Never inside within the probes: the closest, and it says so.
    probe, _ = _planted(1e-6)
    choice = choose_learning_rate(probe, start=1e-5, max_probes=3)
    assert not choice.within and choice.learning_rate == pytest.approx(9e-5) and "closest to" in choice.describe()
    with pytest.raises(ValueError, match="low < high"):
        choose_learning_rate(probe, budget=(0.05, 0.01))
    # A run that does not move the policy (no reward signal: KL exactly 0) stops the search at its first probe.
    probe, calls = _planted(0.0)
    choice = choose_learning_rate(probe, start=1e-5, max_probes=4)
    assert calls == [1e-5] and choice.stalled and not choice.within and "did not move the policy" in choice.describe()


def test_final_kl_and_weight_change():
    history = [{"kl": 0.1}, {"loss": 1.0}, {"kl": 0.2}, {"kl": 0.3}, {"kl": 0.4}]
    assert final_kl(history, tail=3) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="set beta > 0"):
        final_kl([{"loss": 1.0}])
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    before = snapshot(layer.named_parameters())
    with torch.no_grad():
        layer.weight.add_(torch.tensor([[0.0, 0.5], [0.0, 0.0]]))
    assert relative_weight_change(before, layer.named_parameters()) == pytest.approx(0.5 / 5.0)


def test_kl_budget_on_a_tiny_token_grpo_run(tmp_path, tiny_cache):
    """A real probe: the same short token-GRPO run at rising learning rates moves the policy further from its
    reference (higher final KL, larger weight change), and the search lands where the KL is inside the budget."""
    prompts = [[{"role": "user", "content": f"Which colour is the {s}?"}] for s in ("circle", "square")] * 4
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(completions, **kwargs):
        return [float(len(c[0]["content"])) for c in completions]

    def probe(lr):
        torch.manual_seed(0)
        model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
        before = snapshot(model.named_parameters())
        args = GRPOConfig(
            output_dir=str(tmp_path / f"lr{lr:g}"),
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=8,
            max_steps=4,
            learning_rate=lr,
            beta=0.04,
            logging_steps=1,
            bf16=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            seed=0,
        )
        trainer = TokenGRPOTrainer(
            model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.train()
        return KLProbe(
            lr, final_kl(trainer.state.log_history, tail=2), relative_weight_change(before, model.named_parameters())
        )

    low, high = probe(1e-5), probe(1e-2)
    assert high.kl > 10 * max(low.kl, 1e-6) and high.weight_change > 100 * low.weight_change > 0
    choice = choose_learning_rate(probe, budget=(low.kl * 2, high.kl / 2), start=1e-5, factor=10.0, max_probes=4)
    assert choice.within and 1e-5 < choice.learning_rate < 1e-2, choice.describe()
    assert all(math.isfinite(p.kl) for p in choice.probes)
