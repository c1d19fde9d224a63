"""The shapes role-play experiment: a synthetic MMRole-style task on tiny models built offline, and the `demo` and
`study` that measure the method on it (a fast plumbing test of the whole pipeline, not evidence about the method on
real text: docs/findings.md says why).

| module | what it holds |
|---|---|
| `scenes.py` | the task's world: colours, shapes, scenes and their drawings, characters, their answers |
| `general_text.py` | the general corpus the tiny base learns and the text-only corpus is drawn from (no task answers) |
| `task_data.py` | in-memory TRL datasets, the task written in the MMRole layout, the tiny tokenizer's corpus |
| `reward.py` | the task's offline rewards: the judge-like rubric ratio, `task_reward`, answer checks, `RubricJudge` |
| `models.py` | the library's tiny-model builders bound to the task's tokenizer corpus |
| `evaluate.py` | the paper's evaluation protocol on the task's splits (3 generations, mean ± std) |
| `probes.py` | what a plain VLM already knows of the task (answer-token accuracy) |
| `pipeline.py` | `trl-latent demo`: one token vs latent comparison, phase by phase (`PipelineConfig`) |
| `study.py` | `trl-latent study`: the resumable grid over objectives, seeds and ablations |
| `reports.py` | tables and plots of the demo and the study |
| `prefix_cache.py` | saved prefixes (base, SFT model, latent stages) the study's cells share |
"""
