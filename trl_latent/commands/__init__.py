"""The stage commands of `trl-latent`, one module each, TRL style (a YAML `--config`, every field overridable on the
command line, launchable under `accelerate launch -m trl_latent.cli <command>`), each in the module named after
its verb (`eval.py` and `inspect.py` are only ever imported as `trl_latent.commands.eval` / `.inspect`, so they shadow
neither the builtin nor the standard library's module):

| command | module | what it runs |
|---|---|---|
| `trl-latent sft` | `sft.py` | one of the five supervised stages (`stage:`), or stock SFT for the token baseline |
| `trl-latent grpo` | `grpo.py` | latent-action RL (`LatentGRPOTrainer`), or the token baseline (`TokenGRPOTrainer`) |
| `trl-latent eval` | `eval.py` | N generations per test prompt, judge or reward-function score (mean ± std), diversity |
| `trl-latent inspect` | `inspect.py` | what each latent action does: usage, top tokens, examples |
| `trl-latent plan` | `plan.py` | parameters, trainable set and per-GPU memory of a stage (DDP, ZeRO-2/3, offload) |

What they share, one concept per module:

| module | holds |
|---|---|
| `running.py` | registration under the CLI, the errors and their exit statuses (bad input 2, a fixable stop 1, Ctrl-C 130), output |
| `parsing.py` | YAML configs and flags through TRL's parser, unknown keys named |
| `models.py` | TRL's `ModelConfig` (LoRA, 4/8-bit, dtype), model and adapter folder checks, the processor |
| `task_data.py` | the task datasets, a dataset of your own (`dataset_name`: prompts for grpo and eval, dialogues for sft), corpus files |
| `rewards.py` | the LLM judge, TRL's named rewards, rewards and judges by dotted import path |
| `training.py` | train to the end: resume, save on Ctrl-C, save the model with its processor |
"""
