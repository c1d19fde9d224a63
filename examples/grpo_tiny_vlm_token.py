"""GRPO on the tiny VLM with the shapes role-play task: a plain TRL script.

This is the "existing TRL script" of the latent-action recipe. `grpo_tiny_vlm.py` is the same file with the imports,
the class names and the model swapped for their latent-action versions, and nothing else: that is the whole migration
(a test diffs the two files).

```bash
python examples/grpo_tiny_vlm_token.py --output_dir out/grpo-token --max_steps 20 --use_cpu --bf16 false
accelerate launch --config_file examples/accelerate_configs/ddp.yaml --num_processes 2 \
    examples/grpo_tiny_vlm_token.py --output_dir out/grpo-token --max_steps 20 --use_cpu --bf16 false
```
"""

from dataclasses import dataclass, field

from transformers import AutoModelForImageTextToText, set_seed
from trl import GRPOConfig, GRPOTrainer, TrlParser

from trl_latent.experiments.shapes.models import tiny_vlm, tiny_vlm_path
from trl_latent.experiments.shapes.reward import rubric_reward
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset


@dataclass
class ScriptArguments:
    num_prompts: int = field(default=64, metadata={"help": "Prompts in the synthetic RL dataset."})
    model_size: str = field(default="tiny", metadata={"help": "Tiny VLM size: 'tiny' or 'small'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where the tiny VLM is built and cached."})


def main():
    parser = TrlParser((ScriptArguments, GRPOConfig))
    script_args, training_args = parser.parse_args_and_config()
    set_seed(training_args.seed)

    _, processor = tiny_vlm(script_args.model_size, cache_dir=script_args.cache_dir)
    base_path = tiny_vlm_path(script_args.model_size, cache_dir=script_args.cache_dir)
    model = AutoModelForImageTextToText.from_pretrained(base_path)
    dataset = synthetic_rl_dataset(script_args.num_prompts, seed=training_args.seed)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rubric_reward,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    main()
