"""The embedded experiment: the evidence this project produces about its own method, on a laptop CPU, offline.

It is not the library. It uses the library (`trl_latent.modeling`, `trl_latent.training`, ...) the way a user's
experiment would, and the library never imports it (a test enforces the rule), as TRL keeps `trl/scripts` apart from
`trl/trainer`.

| module or package | what it holds |
|---|---|
| `shapes/` | the shapes role-play task on tiny models, `trl-latent demo` and `trl-latent study` (see its `__init__`) |
| `text_roleplay/` | a real pretrained base offline (SmolLM2-135M-Instruct), the text role-play task and `trl-latent text-study` |
| `kl_budget.py` | KL-matched learning rates: each arm's RL rate searched until its KL lands in a budget |
| `verdicts.py` | a target's verdict from seeds: met, missed, within noise, undecided |
| `evidence.py` | the README and docs blocks rebuilt from committed data (`--write`, `--check`) |
| `commands.py` | the `demo`, `study`, `text-study` and `write-synthetic` subcommands |
| `console.py`, `progress.py`, `trainer_args.py` | console output, progress bars, CPU trainer arguments |
"""
