"""Latent-action GRPO on the tiny VLM with the shapes role-play task.

`grpo_tiny_vlm_token.py` is a plain TRL GRPO script; this file is the same script with the imports, the class names
(`GRPOConfig` -> `LatentGRPOConfig`, `GRPOTrainer` -> `LatentGRPOTrainer`) and the model (a latent action model built
around the same base) swapped, and nothing else: that is the whole migration (a test diffs the two files). Here the
latent modules are freshly initialised; a real recipe first learns the latent space (stages 1-5).

```bash
python examples/grpo_tiny_vlm.py --output_dir out/grpo-latent --max_steps 20 --use_cpu --bf16 false
accelerate launch --config_file examples/accelerate_configs/zero3.yaml --num_processes 2 \
    examples/grpo_tiny_vlm.py --output_dir out/grpo-latent --max_steps 20 --use_cpu --bf16 false
```
"""

from dataclasses import dataclass, field

from transformers import set_seed
from trl import TrlParser

from trl_latent import LatentActionModel, LatentGRPOConfig, LatentGRPOTrainer
from trl_latent.experiments.shapes.models import tiny_vlm, tiny_vlm_path
from trl_latent.experiments.shapes.reward import rubric_reward
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset


@dataclass
class ScriptArguments:
    num_prompts: int = field(default=64, metadata={"help": "Prompts in the synthetic RL dataset."})
    model_size: str = field(default="tiny", metadata={"help": "Tiny VLM size: 'tiny' or 'small'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where the tiny VLM is built and cached."})


def main():
    parser = TrlParser((ScriptArguments, LatentGRPOConfig))
    script_args, training_args = parser.parse_args_and_config()
    set_seed(training_args.seed)

    _, processor = tiny_vlm(script_args.model_size, cache_dir=script_args.cache_dir)
    base_path = tiny_vlm_path(script_args.model_size, cache_dir=script_args.cache_dir)
    model = LatentActionModel.from_base(base_path, codebook_size=16, inverse_layers=1, policy_layers=1)
    dataset = synthetic_rl_dataset(script_args.num_prompts, seed=training_args.seed)

    trainer = LatentGRPOTrainer(
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
