"""The embedded experiment: the evidence this project produces about its own method, on a laptop CPU, offline.

It is not the library. It uses the library (`trl_latent.modeling`, `trl_latent.training`, ...) the way a user's
experiment would, and the library never imports it (a test enforces the rule), as TRL keeps `trl/scripts` apart from
`trl/trainer`.

| module | what it holds |
|---|---|
| `task.py` | the shapes role-play task: scenes, characters and their answer patterns, dialogues, the MMRole layout |
| `general.py` | the general corpus the base learns and the text-only corpus is drawn from (no task answers) |
| `reward.py` | the task's offline rewards: the judge-like rubric ratio, `task_reward`, answer checks, `RubricJudge` |
| `models.py` | the library's tiny-model builders bound to the task's tokenizer corpus |
| `evaluate.py` | the paper's evaluation protocol on the task's splits (3 generations, mean ± std) |
| `probes.py` | what a plain VLM already knows of the task (answer-token accuracy) |
| `pipeline.py` | `trl-latent demo`: one token vs latent comparison, phase by phase (`PipelineConfig`) |
| `study.py` | `trl-latent study`: the resumable grid over objectives, seeds and ablations |
| `reports.py` | tables and plots of the demo and the study |
| `prefix_cache.py` | saved prefixes (base, SFT model, latent stages) the study's cells share |
| `commands.py` | the `demo`, `study` and `write-synthetic` subcommands |
| `console.py`, `progress.py`, `trainer_args.py` | console output, progress bars, CPU trainer arguments |
"""
