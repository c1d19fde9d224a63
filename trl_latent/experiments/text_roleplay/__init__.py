"""The text role-play experiment: latent actions on a real pretrained language model, offline.

A text-only stand-in for multimodal role-play (MMRole's "comment" dialogues): a character with a profile and a voice
answers a question about a scene described in words. The base is SmolLM2-135M-Instruct, shipped as a GGUF file inside
a PyPI wheel and converted once into a saved transformers folder. Like the rest of `trl_latent.experiments`, the
library never imports it. See docs/text_roleplay.md.

| module | what it holds |
|---|---|
| `base.py` | the real base: find the GGUF file in the installed wheel, convert it once, return the cached folder |
| `characters.py` | the characters: profile, catchphrase, voice words and voice lines; in-distribution and held-out |
| `task.py` | scenes, questions, prompts in the chat format, the splits and the task SFT data |
| `reward.py` | the verifiable rule reward (content and voice, partial credit) and the success bar |
| `generation.py` | batched chat generation on the CPU (greedy or sampled at temperature 1) |
| `corpus.py` | the general corpus: the base's own samples, standard-library documentation, held-out characters' texts |
| `evaluate.py` | the base's room on the held-out prompts, and `results/text_roleplay/base_eval.json` |
| `study.py` | the study: token RL against latent-action RL, KL-matched, cell by cell into `results/text_roleplay/cells/`, and its report |
"""
