"""The token-level baseline on the embedded shapes role-play task: stock TRL `SFTTrainer`, then stock `GRPOTrainer`
with the rubric reward, on a tiny offline Qwen2.5-VL.

This is the reference every latent-action result is compared with: the same model, data and reward, with RL over
the token vocabulary instead of latent actions. Nothing here subclasses TRL; the demo and the benchmarks call
[`run_token_baseline`].

```python
>>> from trl_latent.training.baseline import run_token_baseline
>>> metrics = run_token_baseline("outputs/token_baseline", size="tiny", sft_steps=20, grpo_steps=2)
>>> sorted(metrics)
['config', 'eval', 'grpo', 'sft']
```
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..data.synthetic import synthetic_rl_dataset, synthetic_sft_dataset
from ..rewards.rubric import answer_accuracy, rubric_reward

logger = logging.getLogger(__name__)


def greedy_completions(model, processor, dataset, max_new_tokens: int = 48, batch_size: int = 32) -> list[str]:
    """Greedy answers of `model` to the prompts of `dataset` (a `prompt` + `image` dataset such as
    [`~trl_latent.data.synthetic.synthetic_rl_dataset`]), decoded without special tokens."""
    from ..evaluation import generate_answers

    return generate_answers(model, processor, dataset, max_new_tokens, batch_size=batch_size)


def evaluate_greedy(model, processor, dataset, max_new_tokens: int = 48, batch_size: int = 32) -> dict[str, Any]:
    """Greedy held-out evaluation: colour, shape, count and voice accuracy
    ([`~trl_latent.rewards.rubric.answer_accuracy`]), the mean rubric reward, and a few example answers."""
    answers = greedy_completions(model, processor, dataset, max_new_tokens, batch_size)
    columns = {key: dataset[key] for key in dataset.column_names if key not in ("prompt", "image")}
    rewards = rubric_reward(dataset["prompt"], answers, **columns)
    metrics: dict[str, Any] = answer_accuracy(answers, dataset["reference"], dataset["character"])
    metrics["reward"] = sum(rewards) / len(rewards)
    metrics["examples"] = [
        {"character": c, "reference": r, "answer": a}
        for c, r, a in list(zip(dataset["character"], dataset["reference"], answers))[:3]
    ]
    return metrics


def cpu_training_args() -> dict:
    """Trainer arguments every tiny CPU run needs: TRL defaults to bf16 and gradient checkpointing, neither of which
    works on a CPU (docs/design.md section 4); no checkpoints, no reporting, one log line per step."""
    return dict(
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def logged(trainer, key: str) -> list[float]:
    """Every value of `key` in the trainer's log history."""
    return [float(entry[key]) for entry in trainer.state.log_history if key in entry]


def run_token_baseline(
    output_dir,
    size: str = "tiny",
    sft_steps: int = 40,
    grpo_steps: int = 10,
    seed: int = 0,
    cache_dir=None,
    image_size=56,
    max_count: int = 1,
    n_sft: int = 8192,
    n_rl: int = 256,
    n_eval: int = 32,
    sft_batch_size: int = 32,
    sft_learning_rate: float = 2e-3,
    grpo_prompts_per_step: int = 4,
    num_generations: int = 8,
    grpo_learning_rate: float = 2e-4,
    max_completion_length: int = 40,
    sft_kwargs: dict | None = None,
    grpo_kwargs: dict | None = None,
    save_model: bool = False,
) -> dict[str, Any]:
    """Run stock TRL SFT then stock TRL GRPO (rubric reward) on a tiny VLM and the synthetic task; return metrics.

    The model is [`~trl_latent.modeling.tiny.tiny_vlm`]`(size, seed)`; SFT uses assistant-only loss on
    [`~trl_latent.data.synthetic.synthetic_sft_dataset`], GRPO uses
    [`~trl_latent.rewards.rubric.rubric_reward`] on [`~trl_latent.data.synthetic.synthetic_rl_dataset`]. Greedy
    accuracy on held-out prompts (in-distribution characters, and out-of-distribution ones) is measured before SFT,
    after SFT and after GRPO. Both trainers run on the CPU in float32 without gradient checkpointing.

    Args:
        output_dir (`str` or `Path`): where the trainers write and `metrics.json` goes.
        size (`str`, *optional*, defaults to `"tiny"`): tiny model size, `"tiny"` (unit tests) or `"small"` (learns
            the task; docs/design.md section 8).
        sft_steps (`int`, *optional*, defaults to `40`): SFT optimiser steps (0 skips SFT).
        grpo_steps (`int`, *optional*, defaults to `10`): GRPO optimiser steps (0 skips GRPO).
        seed (`int`, *optional*, defaults to `0`): seed of the model weights, the data and the trainers.
        cache_dir (*optional*): tiny-model cache folder (default `$TRL_LATENT_CACHE` or `~/.cache/trl_latent`).
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to `56`): image side or (width, height).
        max_count (`int`, *optional*, defaults to `1`): most shapes per image.
        n_sft (`int`, *optional*, defaults to `8192`): SFT dialogues (fresh images keep the model from memorising
            them: with 512, 800 steps leave shape accuracy near chance on held-out images).
        n_rl (`int`, *optional*, defaults to `256`): RL prompts.
        n_eval (`int`, *optional*, defaults to `32`): held-out prompts per evaluation set (ID and OOD).
        sft_batch_size (`int`, *optional*, defaults to `32`): SFT batch size.
        sft_learning_rate (`float`, *optional*, defaults to `2e-3`): SFT learning rate (cosine schedule).
        grpo_prompts_per_step (`int`, *optional*, defaults to `4`): prompts per GRPO step.
        num_generations (`int`, *optional*, defaults to `8`): completions per prompt.
        grpo_learning_rate (`float`, *optional*, defaults to `2e-4`): GRPO learning rate.
        max_completion_length (`int`, *optional*, defaults to `40`): longest completion, in GRPO and evaluation.
        sft_kwargs (`dict`, *optional*): extra `trl.SFTConfig` arguments (they override the ones above).
        grpo_kwargs (`dict`, *optional*): extra `trl.GRPOConfig` arguments, e.g. `{"loss_type": "dr_grpo"}`.
        save_model (`bool`, *optional*, defaults to `False`): save the final model and processor to
            `output_dir/model`.

    Returns:
        `dict`: `config`, `sft` (loss first/last and curve, seconds), `grpo` (reward first/last and curve, seconds,
        how many parameter tensors changed), `eval` (`initial`, `after_sft`, `after_grpo`, each with `id` and `ood`
        accuracies and mean reward). Also written to `output_dir/metrics.json`.
    """
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from ..modeling.tiny import tiny_vlm

    if sft_steps < 0 or grpo_steps < 0:
        raise ValueError(f"sft_steps ({sft_steps}) and grpo_steps ({grpo_steps}) must be >= 0.")
    if num_generations < 2:
        raise ValueError(f"num_generations={num_generations}: GRPO needs at least 2 completions per prompt.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = {
        key: value
        for key, value in locals().items()
        if key
        not in ("output_dir", "PrinterCallback", "GRPOConfig", "GRPOTrainer", "SFTConfig", "SFTTrainer", "tiny_vlm")
    }
    config["cache_dir"] = str(cache_dir) if cache_dir is not None else None
    config["image_size"] = list(image_size) if not isinstance(image_size, int) else image_size

    model, processor = tiny_vlm(size, seed=seed, cache_dir=cache_dir)
    eval_sets = {
        "id": synthetic_rl_dataset(n_eval, seed, image_size, "id", max_count, split="eval"),
        "ood": synthetic_rl_dataset(n_eval, seed, image_size, "ood", max_count, split="eval"),
    }

    def evaluate() -> dict:
        return {
            name: evaluate_greedy(model, processor, ds, max_new_tokens=max_completion_length)
            for name, ds in eval_sets.items()
        }

    # CPU-safe settings every run needs: TRL defaults to bf16 and gradient checkpointing (docs/design.md section 4).
    common = {**cpu_training_args(), "seed": seed}
    metrics: dict[str, Any] = {"config": config, "eval": {"initial": evaluate()}}

    sft: dict[str, Any] = {"steps": sft_steps}
    if sft_steps > 0:
        sft_args = SFTConfig(
            output_dir=str(output_dir / "sft"),
            max_steps=sft_steps,
            per_device_train_batch_size=sft_batch_size,
            learning_rate=sft_learning_rate,
            lr_scheduler_type="cosine",
            assistant_only_loss=True,
            max_length=None,  # truncation that cuts image tokens fails (docs/design.md section 4)
            **{**common, **(sft_kwargs or {})},
        )
        trainer = SFTTrainer(
            model=model,
            args=sft_args,
            train_dataset=synthetic_sft_dataset(n_sft, seed, image_size, "id", max_count, split="sft"),
            processing_class=processor,  # explicit: AutoProcessor may fall back to a bare tokenizer
        )
        trainer.remove_callback(PrinterCallback)  # logging every step for the curve, without printing every step
        start = time.perf_counter()
        trainer.train()
        sft["seconds"] = time.perf_counter() - start
        losses = logged(trainer, "loss")
        sft.update(loss_first=losses[0], loss_last=losses[-1], loss_curve=losses)
        model = trainer.model
        metrics["eval"]["after_sft"] = evaluate()
    metrics["sft"] = sft

    grpo: dict[str, Any] = {"steps": grpo_steps}
    if grpo_steps > 0:
        batch = grpo_prompts_per_step * num_generations  # one generation batch per step: divisible by construction
        grpo_args = GRPOConfig(
            output_dir=str(output_dir / "grpo"),
            max_steps=grpo_steps,
            per_device_train_batch_size=batch,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            learning_rate=grpo_learning_rate,
            **{**common, **(grpo_kwargs or {})},
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=rubric_reward,
            args=grpo_args,
            train_dataset=synthetic_rl_dataset(n_rl, seed, image_size, "id", max_count, split="rl"),
            processing_class=processor,
        )
        trainer.remove_callback(PrinterCallback)
        before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
        start = time.perf_counter()
        trainer.train()
        grpo["seconds"] = time.perf_counter() - start
        rewards = logged(trainer, "reward")
        grpo.update(reward_first=rewards[0], reward_last=rewards[-1], reward_curve=rewards)
        after = dict(trainer.model.named_parameters())
        grpo["changed_parameters"] = sum(not torch.equal(before[n], after[n].detach()) for n in before)
        grpo["trainable_parameters"] = len(before)
        model = trainer.model
        metrics["eval"]["after_grpo"] = evaluate()
    metrics["grpo"] = grpo

    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if save_model:
        model.save_pretrained(output_dir / "model")
        processor.save_pretrained(output_dir / "model")
    return metrics


def format_baseline_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of [`run_token_baseline`]'s metrics."""
    lines = []
    sft, grpo = metrics["sft"], metrics["grpo"]
    if "loss_first" in sft:
        lines.append(
            f"SFT  {sft['steps']} steps in {sft['seconds']:.1f}s: loss {sft['loss_first']:.3f} -> {sft['loss_last']:.3f}"
        )
    if "reward_first" in grpo:
        lines.append(
            f"GRPO {grpo['steps']} steps in {grpo['seconds']:.1f}s: reward {grpo['reward_first']:.3f} -> "
            f"{grpo['reward_last']:.3f} ({grpo['changed_parameters']}/{grpo['trainable_parameters']} tensors changed)"
        )
    lines.append("greedy held-out accuracy (colour / shape / count / voice / all, mean rubric reward):")
    for stage, sets in metrics["eval"].items():
        for name, m in sets.items():
            lines.append(
                f"  {stage:<10} {name:<3}  {m['colour']:.2f} / {m['shape']:.2f} / {m['count']:.2f} / "
                f"{m['voice']:.2f} / {m['all']:.2f}   reward {m['reward']:.3f}"
            )
    return "\n".join(lines)
