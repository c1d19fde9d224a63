"""Evaluation runner: N generations per test prompt, judge metric (mean +/- std over generations) and diversity.

The paper's protocol (docs/architecture.md section 5): for each test prompt draw N = 3 responses; score each with the judge,
the metric of one response being the mean over the rubric's dimensions of `A_d / B_d`; average over prompts per
generation round and report mean +/- sample std (divisor N - 1) over the N rounds. Diversity is measured on each
prompt's group of N responses: embedding diversity (reciprocal of the mean pairwise cosine similarity), distinct-n and
self-BLEU.

Generation goes through a *generation backend*: any callable `generate(prompts, images) -> list[str]` taking a batch
of prompt conversations (TRL format, `{"type": "image"}` placeholders) and their PIL images and returning one
completion per prompt. The runner calls it N times per batch, re-seeding torch before each round.

- [`VLMGenerationBackend`]: a plain VLM (the token baseline): `model.generate` sampling tokens at temperature 0.1
  among the top 64, no nucleus filter.
- [`LatentGenerationBackend`]: a latent action model's latent decoding with near-greedy codes (top-k 64,
  temperature 0.1) and greedy tokens (the authors' evaluation setting).

**The paper's evaluation protocol** is spelled by three constants, the defaults of both backends, of [`evaluate`] and
of `trl-latent eval`: `PAPER_EVAL_GENERATIONS = 3` generations per prompt, `PAPER_EVAL_TEMPERATURE = 0.1` and
`PAPER_EVAL_TOP_K = 64`. The paper samples latent codes at top-k 64 / temperature 0.1 and "samples tokens" for the
token baseline without giving its settings; the token baseline uses the same temperature and top-k over tokens, with
nucleus filtering off (`top_p=1.0`). That last point matters: Qwen2.5-VL's own `generation_config.json` carries
`top_k=1, top_p=0.001`, which would silently turn "sampling" into greedy decoding (three identical rounds, std 0).
At temperature 0.1 the top-64 filter changes next to nothing for tokens; it is kept for symmetry with the codes.
The RL rollout setting (temperature 1, code top-k 32) is `ROLLOUT_TEMPERATURE` / `ROLLOUT_CODE_TOP_K`.

```python
>>> from trl_latent.evaluation import evaluate
>>> result = evaluate({"id_test": dataset}, generate, judge=judge, num_generations=3)  # doctest: +SKIP
>>> print(result.to_markdown())  # doctest: +SKIP
```
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .metrics.diversity import DEFAULT_EMBEDDER, Embedder, distinct_n, embedding_diversity, self_bleu
from .metrics.stats import mean_std
from .paper import PAPER_EVAL_GENERATIONS, PAPER_EVAL_TEMPERATURE, PAPER_EVAL_TOP_K, ROLLOUT_CODE_TOP_K
from .rewards.judge import JudgeReward

logger = logging.getLogger(__name__)

GenerationBackend = Callable[[list, list], list[str]]

# The paper's evaluation protocol: N generations per test prompt, codes (latent) or tokens (plain VLM) sampled at
# this temperature among the top-k; the metric is reported as mean +/- sample std over the N generation rounds.
# The RL rollout setting (`generate_answers(..., sample=True)`, diversity of rollouts): temperature 1, code top-k
# `ROLLOUT_CODE_TOP_K` (the authors' RL setting, `LatentGRPOConfig.code_top_k`'s default); tokens of a plain VLM are
# not top-k filtered.
ROLLOUT_TEMPERATURE = 1.0


class VLMGenerationBackend:
    """Generation from a plain VLM with `model.generate` and its processor's chat template.

    Args:
        model (`transformers.PreTrainedModel`):
            A vision-language model with `generate` (e.g. Qwen2.5-VL).
        processor (`transformers.ProcessorMixin`):
            Its processor; it must pad on the left.
        max_new_tokens (`int`, *optional*, defaults to `512`):
            Cap on the completion length.
        temperature (`float`, *optional*, defaults to `PAPER_EVAL_TEMPERATURE` (0.1)):
            Token sampling temperature (the paper's evaluation setting); `0` decodes greedily.
        top_k (`int`, *optional*, defaults to `PAPER_EVAL_TOP_K` (64)):
            Top-k filter of the token sampling; `0` keeps all tokens, `None` keeps the model's generation config.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus filter of the token sampling; `1.0` turns it off (Qwen2.5-VL's generation config sets 0.001, which
            makes sampling greedy), `None` keeps the model's generation config.
    """

    def __init__(
        self,
        model,
        processor,
        max_new_tokens: int = 512,
        temperature: float = PAPER_EVAL_TEMPERATURE,
        top_k: int | None = PAPER_EVAL_TOP_K,
        top_p: float | None = 1.0,
    ):
        tokenizer = getattr(processor, "tokenizer", processor)
        if tokenizer.padding_side != "left":
            raise ValueError(
                "The processor pads on the right; batched generation needs left padding: set "
                "processor.tokenizer.padding_side = 'left'."
            )
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.model).__name__}, temperature={self.temperature}, top_k={self.top_k}, "
            f"max_new_tokens={self.max_new_tokens})"
        )

    def _inputs(self, prompts: list, images: list):
        """Prompts in TRL's formats as model inputs: a conversational prompt through the chat template (its images
        placed as TRL places them), a standard (string) prompt as it is, as TRL's trainers take them."""
        from transformers import ProcessorMixin
        from trl.data_utils import prepare_multimodal_messages

        multimodal = isinstance(self.processor, ProcessorMixin)
        texts = []
        for prompt, image in zip(prompts, images):
            if isinstance(prompt, str):
                texts.append(prompt)
                continue
            messages = list(prompt)
            if multimodal:
                messages = prepare_multimodal_messages(messages, [image] if image is not None else [])
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        flat_images = [image for image in images if image is not None]
        if flat_images:
            inputs = self.processor(text=texts, images=flat_images, return_tensors="pt", padding=True)
        else:
            inputs = self.processor(text=texts, return_tensors="pt", padding=True)
        return inputs.to(self.model.device)

    def _generate(self, inputs) -> torch.Tensor:
        sampling = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature}
            if self.top_k is not None:
                sampling["top_k"] = self.top_k
            if self.top_p is not None:
                sampling["top_p"] = self.top_p
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        return output[:, inputs["input_ids"].shape[1] :]

    def __call__(self, prompts: list, images: list) -> list[str]:
        inputs = self._inputs(prompts, images)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            completions = self._generate(inputs)
        self.model.train(was_training)
        return [text.strip() for text in self.processor.batch_decode(completions, skip_special_tokens=True)]


class LatentGenerationBackend(VLMGenerationBackend):
    """Generation from a [`~trl_latent.LatentActionModel`]: the policy picks codes near-greedily (top-k 64,
    temperature 0.1, the authors' evaluation setting) and the world model decodes tokens greedily.

    Args:
        model ([`~trl_latent.LatentActionModel`]):
            The latent action model.
        processor (`transformers.ProcessorMixin`):
            The base model's processor; it must pad on the left.
        max_new_tokens (`int`, *optional*, defaults to `512`):
            Cap on the completion length.
        temperature (`float`, *optional*, defaults to `PAPER_EVAL_TEMPERATURE` (0.1)):
            Temperature of the code distribution; `0` picks the policy's argmax code.
        top_k (`int`, *optional*, defaults to `PAPER_EVAL_TOP_K` (64)):
            Top-k filter on codes; `None` or `0` keeps all codes.
    """

    def __init__(
        self,
        model,
        processor,
        max_new_tokens: int = 512,
        temperature: float = PAPER_EVAL_TEMPERATURE,
        top_k: int | None = PAPER_EVAL_TOP_K,
    ):
        from .modeling.model import LatentActionModel

        if not isinstance(model, LatentActionModel):
            raise TypeError(
                f"LatentGenerationBackend needs a LatentActionModel, got {type(model).__name__}; use "
                "VLMGenerationBackend for a plain VLM."
            )
        super().__init__(model, processor, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)

    def _generate(self, inputs) -> torch.Tensor:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        out = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample_codes=self.temperature > 0,
            code_temperature=max(self.temperature, 1e-6),
            code_top_k=self.top_k,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return out.completion_ids


def generate_answers(
    model,
    processor,
    dataset,
    max_new_tokens: int = 48,
    sample: bool = False,
    batch_size: int = 32,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    num_generations: int | None = None,
    seed: int | None = None,
) -> list[str] | list[list[str]]:
    """Answers of a plain VLM or a latent action model to the prompts of a `prompt` + `image` dataset.

    The sampling: `sample=False` (default) decodes greedily (greedy tokens; the policy's argmax codes). `sample=True`
    is the RL rollout setting: temperature `ROLLOUT_TEMPERATURE` (1) over all tokens (plain VLM) or over the top
    `ROLLOUT_CODE_TOP_K` (32) codes (latent). `temperature` and `top_k` override it, with the same meaning for both
    kinds of model (codes of a latent model, tokens of a plain VLM; a latent model's tokens stay greedy; `0` is
    greedy / no filter); `top_k=None` keeps the `sample` setting's. The paper's evaluation protocol is

    ```python
    rounds = generate_answers(model, processor, dataset, temperature=PAPER_EVAL_TEMPERATURE, top_k=PAPER_EVAL_TOP_K,
                              num_generations=PAPER_EVAL_GENERATIONS, seed=0)
    ```

    The layout: with `num_generations=None` (default) one answer per prompt, a `list[str]` of `len(dataset)`. With
    an integer `num_generations=n` (even 1), **generation-major** rounds: a list of `n` lists of `len(dataset)`
    answers, `rounds[k][i]` being prompt i's k-th answer. A round is scored like one greedy pass (a reward function
    over `rounds[k]`) and the metric reported as the mean +/- std over rounds ([`mean_std_over_rounds`]);
    `list(zip(*rounds))` gives each prompt's group of `n` answers (for diversity).

    `seed`: round k runs under `torch.manual_seed(seed + k)` (re-seeded for each batch, as [`evaluate`] does), inside
    `torch.random.fork_rng`, so the caller's random state is left as it was; `None` uses the current random state.
    """
    from .modeling.model import LatentActionModel

    if num_generations is not None and num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
    latent = isinstance(model, LatentActionModel)
    if temperature is None:
        temperature = ROLLOUT_TEMPERATURE if sample else 0.0
    if top_k is None:
        top_k = ROLLOUT_CODE_TOP_K if latent else 0
    backend_class = LatentGenerationBackend if latent else VLMGenerationBackend
    backend = backend_class(model, processor, max_new_tokens, temperature=temperature, top_k=top_k)
    n = 1 if num_generations is None else num_generations
    rounds: list[list[str]] = [[] for _ in range(n)]
    with torch.random.fork_rng(enabled=seed is not None):
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            for k in range(n):
                if seed is not None:
                    torch.manual_seed(seed + k)
                rounds[k].extend(backend(rows["prompt"], rows["image"]))
    return rounds[0] if num_generations is None else rounds


def mean_std_over_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and sample std over generation rounds of per-round metrics: `rounds[k]` maps a metric name to its value in
    round k (e.g. the accuracy over all prompts of the k-th answers); the result has each `key` (the mean over rounds)
    and `key + "_std"` (the sample std, divisor n - 1, 0 for one round; [`~trl_latent.metrics.stats.mean_std`]).
    Only numeric metrics present in every round are summarised.

    ```python
    >>> mean_std_over_rounds([{"all": 0.5}, {"all": 1.0}, {"all": 0.75}])
    {'all': 0.75, 'all_std': 0.25}

    ```
    """
    if not rounds:
        raise ValueError("mean_std_over_rounds needs at least one round.")
    out: dict[str, float] = {}
    for key, value in rounds[0].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not all(key in r for r in rounds):
            continue
        out[key], out[f"{key}_std"] = mean_std(r[key] for r in rounds)
    return out


def _nanmean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


@dataclass
class SplitResult:
    """Metrics of one evaluated split; `samples` holds per-prompt generations and judge scores."""

    name: str
    num_prompts: int
    num_generations: int
    judge_mean: float = math.nan
    judge_std: float = math.nan
    judge_per_generation: list[float] = field(default_factory=list)
    judge_failures: int = 0
    diversity: dict[str, float] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "samples"}


@dataclass
class EvaluationResult:
    """Results of [`evaluate`] over one or more splits; `to_markdown()` and `save()` write the report."""

    splits: dict[str, SplitResult]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "summary": {name: split.summary() for name, split in self.splits.items()},
            "samples": {name: split.samples for name, split in self.splits.items()},
        }

    def to_markdown(self) -> str:
        """One row per split: judge metric mean ± std over generations, diversity, judge failures."""
        ngrams = self.config.get("distinct_ngrams", [1, 2])
        header = ["split", "prompts", "judge score (mean ± std)", "embedding diversity"]
        header += [f"distinct-{n}" for n in ngrams] + ["self-BLEU", "judge failures"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

        def fmt(value: float) -> str:
            return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"

        for name, split in self.splits.items():
            judge = "n/a" if math.isnan(split.judge_mean) else f"{split.judge_mean:.3f} ± {split.judge_std:.3f}"
            row = [name, str(split.num_prompts), judge, fmt(split.diversity.get("embedding", math.nan))]
            row += [fmt(split.diversity.get(f"distinct_{n}", math.nan)) for n in ngrams]
            row += [fmt(split.diversity.get("self_bleu", math.nan)), str(split.judge_failures)]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | Path) -> tuple[Path, Path]:
        """Write `evaluation.json` (config, summary, per-sample generations and scores) and `evaluation.md`."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = output_dir / "evaluation.json", output_dir / "evaluation.md"
        json_path.write_text(json.dumps(_finite(self.to_dict()), indent=2, default=_json_default, allow_nan=False))
        md_path.write_text(self.to_markdown())
        return json_path, md_path


def _finite(value):
    # NaN (a metric that does not exist, e.g. no successful judgement) is written as null: strict JSON has no NaN.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _judge_columns(batch: dict, size: int) -> dict:
    return {k: v for k, v in batch.items() if k not in ("prompt", "image", "images") and len(v) == size}


def evaluate_split(
    name: str,
    dataset,
    generate: GenerationBackend,
    judge: JudgeReward | None = None,
    *,
    num_generations: int = PAPER_EVAL_GENERATIONS,
    batch_size: int = 8,
    embedder: Callable | None = None,
    distinct_ngrams: Sequence[int] = (1, 2),
    seed: int = 0,
) -> SplitResult:
    """Generate, judge and measure diversity on one split (a TRL prompt dataset with `prompt` and `image`)."""
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
    if "prompt" not in dataset.column_names:
        raise ValueError(f"Split {name!r} has no 'prompt' column; use a prompt dataset from trl_latent.data.")
    n = len(dataset)
    generations: list[list[str]] = [[] for _ in range(n)]
    metrics: list[list[float]] = [[math.nan] * num_generations for _ in range(n)]
    failures = 0
    for start in range(0, n, batch_size):
        batch = dataset[start : start + batch_size]
        size = len(batch["prompt"])
        images = batch.get("image", [None] * size)
        if "image" not in batch and "images" in batch:
            images = [imgs[0] if imgs else None for imgs in batch["images"]]
        columns = _judge_columns(batch, size)
        for round_index in range(num_generations):
            torch.manual_seed(seed + round_index)
            completions = generate(batch["prompt"], images)
            if len(completions) != size:
                raise ValueError(f"The generation backend returned {len(completions)} completions for {size} prompts.")
            for offset, completion in enumerate(completions):
                generations[start + offset].append(completion)
            if judge is not None:
                judgements = judge.judge(batch["prompt"], completions, **columns)
                for offset, judgement in enumerate(judgements):
                    if judgement.ok and judgement.metric is not None:
                        metrics[start + offset][round_index] = judgement.metric
                    else:
                        failures += 1

    result = SplitResult(name=name, num_prompts=n, num_generations=num_generations, judge_failures=failures)
    if judge is not None:
        result.judge_per_generation = [_nanmean([metrics[i][k] for i in range(n)]) for k in range(num_generations)]
        result.judge_mean, result.judge_std = mean_std(result.judge_per_generation)  # sample std (n - 1)
    result.diversity = {f"distinct_{k}": _nanmean([distinct_n(g, k) for g in generations]) for k in distinct_ngrams}
    result.diversity["self_bleu"] = _nanmean([self_bleu(g) for g in generations])
    if embedder is not None:
        result.diversity["embedding"] = embedding_diversity(generations, embedder)
    ids = dataset["id"] if "id" in dataset.column_names else list(range(n))
    references = dataset["reference"] if "reference" in dataset.column_names else [None] * n
    result.samples = [
        {"id": ids[i], "reference": references[i], "generations": generations[i], "judge_metric": metrics[i]}
        for i in range(n)
    ]
    return result


def evaluate(
    datasets,
    generate: GenerationBackend,
    judge: JudgeReward | None = None,
    *,
    num_generations: int = PAPER_EVAL_GENERATIONS,
    batch_size: int = 8,
    embedder: Callable | str | None = DEFAULT_EMBEDDER,
    distinct_ngrams: Sequence[int] = (1, 2),
    seed: int = 0,
    output_dir: str | Path | None = None,
) -> EvaluationResult:
    """Evaluate a generation backend on one or more test splits.

    Args:
        datasets (`Dataset` or `dict[str, Dataset]`):
            Test split(s) in the TRL prompt format (`prompt`, `image`, plus the columns the judge's rubric needs).
        generate (`Callable[[list, list], list[str]]`):
            The generation backend, e.g. [`VLMGenerationBackend`].
        judge ([`~trl_latent.rewards.judge.JudgeReward`], *optional*):
            Scores each response; without it only diversity is reported.
        num_generations (`int`, *optional*, defaults to `PAPER_EVAL_GENERATIONS` (3)):
            Responses per prompt (paper: 3).
        batch_size (`int`, *optional*, defaults to `8`):
            Prompts per generation call.
        embedder (`Callable`, `str` or `None`, *optional*, defaults to `"default"`):
            Sentence embedder for embedding diversity: `"default"` loads [`~trl_latent.metrics.diversity.Embedder`]
            (all-MiniLM-L6-v2, offline), a string loads that sentence-transformers model, `None` skips the metric.
        distinct_ngrams (`Sequence[int]`, *optional*, defaults to `(1, 2)`):
            The n of the distinct-n metrics.
        seed (`int`, *optional*, defaults to `0`):
            Generation round k runs under `torch.manual_seed(seed + k)`.
        output_dir (`str` or `Path`, *optional*):
            Where to write `evaluation.json` and `evaluation.md`.
    """
    if not isinstance(datasets, dict):
        datasets = {"test": datasets}
    if isinstance(embedder, str):
        embedder = Embedder(None if embedder == DEFAULT_EMBEDDER else embedder)
    splits = {
        name: evaluate_split(
            name,
            dataset,
            generate,
            judge,
            num_generations=num_generations,
            batch_size=batch_size,
            embedder=embedder,
            distinct_ngrams=distinct_ngrams,
            seed=seed,
        )
        for name, dataset in datasets.items()
    }
    config = {
        "num_generations": num_generations,
        "distinct_ngrams": list(distinct_ngrams),
        "seed": seed,
        "generate": repr(generate),
        "judge": repr(judge),
        "embedder": repr(embedder),
        "judge_std": "sample std (ddof=1, divisor n - 1; 0 for one round) over the generation rounds",
    }
    if judge is not None:
        config["judge_counters"] = judge.metrics()
    result = EvaluationResult(splits=splits, config=config)
    if output_dir is not None:
        result.save(output_dir)
    return result
