"""The stage commands of `trl-latent`, one module each, TRL style (a YAML `--config`, every field overridable on the
command line, launchable under `accelerate launch -m trl_latent.cli <command>`):

| command | module | what it runs |
|---|---|---|
| `trl-latent sft` | `sft.py` | one of the five supervised stages (`stage:`), or stock SFT for the token baseline |
| `trl-latent grpo` | `grpo.py` | latent-action RL (`LatentGRPOTrainer`), or the token baseline (`TokenGRPOTrainer`) |
| `trl-latent eval` | `evaluate.py` | N generations per test prompt, judge or rubric score (mean ± std), diversity |
| `trl-latent inspect` | `inspect_codes.py` | what each latent action does: usage, top tokens, examples |
| `trl-latent plan` | `plan.py` | parameters, trainable set and per-GPU memory of a stage (DDP, ZeRO-2/3, offload) |

`common.py` holds what they share: argument parsing with clear errors, input checks, task loading, rewards.
"""
