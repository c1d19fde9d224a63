"""`trl-latent eval`: score models on a task's test splits the paper's way, from a YAML config.

```
trl-latent eval --config examples/recipes/qwen2.5-vl-3b/mmrole/eval.yaml
trl-latent eval --task mmrole --task_root data/mmrole --reward my_judges.KeywordJudge --models outputs/grpo
trl-latent eval --dataset_name prompts.jsonl --splits train --reward my_rewards.keyword_reward --models outputs/grpo
```

For each model (a saved latent action model, or a plain VLM such as the token baseline) and each test split: N
generations per prompt (paper: 3), each scored by the judge (the mean over the benchmark's dimensions of policy score
/ reference score), by a judge of your own (`reward: package.module.Judge`) or by a reward function with TRL's
signature (`reward: my_rewards.f`, or one of TRL's named rewards); the split's score is the mean ± std over the N
generation rounds, beside rollout diversity (distinct-n, self-BLEU, embedding diversity). Runs through
`trl_latent.evaluation.evaluate`; writes `<output_dir>/<model name>/evaluation.{json,md}` and one table of all models
and splits, `<output_dir>/evaluation.md`, and prints it.

The defaults are the paper's protocol (`trl_latent.evaluation.PAPER_EVAL_GENERATIONS`, `PAPER_EVAL_TEMPERATURE`,
`PAPER_EVAL_TOP_K`): 3 generations per prompt; latent models sample codes among the top 64 at temperature 0.1 and
decode tokens greedily; plain VLMs (the token baseline) sample tokens among the top 64 at temperature 0.1 with the
nucleus filter off (the model's own generation config, e.g. Qwen2.5-VL's `top_k=1, top_p=0.001`, would make the
"sampling" greedy).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics.diversity import DEFAULT_EMBEDDER
from ..paper import PAPER_EVAL_GENERATIONS, PAPER_EVAL_TEMPERATURE, PAPER_EVAL_TOP_K
from .models import (
    check_model,
    check_weight_files,
    is_latent_model,
    is_text_only_model,
    load_processor,
    processor_source,
)
from .parsing import parse, trl_parser
from .rewards import TRL_REWARD_FUNCS, RewardArguments, build_judge, import_reward
from .running import CommandError, register, run
from .task_data import DatasetSourceArguments, TaskArguments, load_test_prompts

PROG = "trl-latent eval"
SUMMARY = "N generations per test prompt; judge score, mean ± std over the generations; rollout diversity."


@dataclass
class EvalArguments(TaskArguments, DatasetSourceArguments, RewardArguments):
    """The models, the test splits and the protocol."""

    models: list[str] | None = field(
        default=None,
        metadata={"help": "Models to evaluate: saved latent action models or plain VLMs (folders or hub ids)."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the results are written."})
    splits: list[str] | None = field(
        default=None,
        metadata={"help": "Test splits (default: id_test ood_test for MMRole and synthetic, ls1_test ls2_test for "
                  "PCogAlignBench, test for a dataset_name)."},
    )  # fmt: skip
    num_generations: int = field(
        default=PAPER_EVAL_GENERATIONS, metadata={"help": "Generations per prompt (paper: 3)."}
    )
    max_new_tokens: int = field(default=1024, metadata={"help": "Cap on each answer's length."})
    temperature: float = field(
        default=PAPER_EVAL_TEMPERATURE,
        metadata={"help": "Sampling temperature of codes (latent) or tokens (plain VLM; paper: 0.1 for both); 0 is "
                  "greedy."},
    )  # fmt: skip
    top_k: int | None = field(
        default=PAPER_EVAL_TOP_K,
        metadata={"help": "Top-k filter of the sampling: codes (latent) or tokens (plain VLM; paper: 64 for both); 0 "
                  "keeps all."},
    )  # fmt: skip
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation call."})
    embedder: str = field(
        default=DEFAULT_EMBEDDER,
        metadata={"help": "Sentence embedder of embedding diversity: 'default' (all-MiniLM-L6-v2, offline), a "
                  "sentence-transformers model name or folder, or 'none' to skip the metric."},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "Generation round k runs under seed + k."})


class _ProgressBackend:
    """A generation backend that advances a progress bar by one batch per call."""

    def __init__(self, backend, bar):
        self.backend, self.bar = backend, bar

    def __repr__(self) -> str:
        return repr(self.backend)

    def __call__(self, prompts, images):
        out = self.backend(prompts, images)
        self.bar.update(1)
        return out


def _model_name(path: str, taken: set[str]) -> str:
    name = Path(path.rstrip("/")).name or "model"
    while name in taken:
        name = f"{name}_"
    taken.add(name)
    return name


def _row(model: str, split, embedding: bool) -> str:
    def fmt(value):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    score = "n/a" if math.isnan(split.judge_mean) else f"{split.judge_mean:.3f} ± {split.judge_std:.3f}"
    cells = [model, split.name, str(split.num_prompts), score]
    cells += [fmt(split.diversity.get(k)) for k in ("distinct_1", "distinct_2", "self_bleu")]
    if embedding:
        cells.append(fmt(split.diversity.get("embedding")))
    return "| " + " | ".join(cells) + " |"


def _main(argv: list[str]) -> int:
    (args,) = parse(trl_parser((EvalArguments,), PROG, SUMMARY), argv, PROG)
    if not args.models:
        raise CommandError("set models: one or more saved latent action models or plain VLMs to evaluate.")
    for model in args.models:
        check_model(model, "models")
        check_weight_files(model, "models")
    if args.num_generations < 1:
        raise CommandError(f"num_generations must be at least 1 (got {args.num_generations}).")
    if args.reward == "judge" and args.dataset_name is not None:
        raise CommandError(
            "reward 'judge' scores with a task's rubric (mmrole or pcogalign); for a dataset_name, set reward to a "
            f"judge or reward function of your own (a dotted import path) or one of TRL's {', '.join(TRL_REWARD_FUNCS)}."
        )
    takes_images = not all(is_text_only_model(model) for model in args.models)
    datasets = load_test_prompts(args, args.splits, takes_images, "eval")
    splits = list(datasets)
    judge = build_judge(args, args.task) if args.reward == "judge" else _custom_judge(args.reward)

    import torch
    from tqdm.auto import tqdm

    from ..evaluation import LatentGenerationBackend, VLMGenerationBackend, evaluate

    embedder = None if args.embedder == "none" else args.embedder
    if embedder is not None:
        from ..metrics.diversity import Embedder

        try:
            embedder = Embedder(None if embedder == "default" else embedder)
        except (ImportError, OSError) as err:
            raise CommandError(
                f"cannot load the sentence embedder {args.embedder!r} for embedding diversity ({err}); install "
                "trl-latent[metrics], give a local sentence-transformers folder, or set embedder: none."
            ) from err
    device = "cuda" if torch.cuda.is_available() else "cpu"
    output_dir = Path(args.output_dir)
    names: set[str] = set()
    rows = []
    for model_path in args.models:
        name = _model_name(model_path, names)
        processor = load_processor(processor_source(model_path), padding_side="left")
        if is_latent_model(model_path):
            from ..modeling.model import LatentActionModel

            model = LatentActionModel.from_pretrained(model_path).to(device)
            backend = LatentGenerationBackend(
                model, processor, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k
            )
        else:
            from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

            auto = AutoModelForCausalLM if is_text_only_model(model_path) else AutoModelForImageTextToText
            model = auto.from_pretrained(model_path).to(device)
            backend = VLMGenerationBackend(
                model, processor, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k
            )
        if hasattr(judge, "reset_metrics"):  # each model's evaluation.json counts its own judgements
            judge.reset_metrics()
        calls = sum(math.ceil(len(d) / args.batch_size) for d in datasets.values()) * args.num_generations
        with tqdm(total=calls, desc=f"eval {name}", unit="batch") as bar:
            result = evaluate(
                {split: datasets[split] for split in splits},
                _ProgressBackend(backend, bar),
                judge,
                num_generations=args.num_generations,
                batch_size=args.batch_size,
                embedder=embedder,
                seed=args.seed,
                output_dir=output_dir / name,
            )
        rows += [_row(name, result.splits[split], embedder is not None) for split in splits]
        del model

    header = ["model", "split", "prompts", f"{args.reward} score (mean ± std over {args.num_generations})"]
    header += ["distinct-1", "distinct-2", "self-BLEU"] + (["embedding diversity"] if embedder is not None else [])
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]) + "\n"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.md").write_text(table)
    print(table)
    print(f"{PROG}: results written to {output_dir}/evaluation.md and {output_dir}/<model>/evaluation.json")
    return 0


def _custom_judge(path: str):
    """A judge given by its dotted import path (an object with `judge(prompts, completions, **columns)` returning
    [`~trl_latent.rewards.judge.Judgement`]s, or a class that builds one with no arguments), or a reward function with
    TRL's signature (a dotted path or one of TRL's named rewards), scored by
    [`~trl_latent.rewards.function_judge.RewardFunctionJudge`]."""
    from ..rewards.function_judge import RewardFunctionJudge

    if path in TRL_REWARD_FUNCS:
        import trl.rewards

        return RewardFunctionJudge(getattr(trl.rewards, path))
    judge = import_reward(path)
    if isinstance(judge, type):
        judge = judge()
    if callable(getattr(judge, "judge", None)):
        return judge
    if callable(judge):
        return RewardFunctionJudge(judge, name=path)
    raise CommandError(
        f"reward: {path} is neither a judge nor a reward function: eval needs an object with judge(prompts, "
        "completions, **columns) returning Judgements (trl_latent.rewards.judge), e.g. my_judges.KeywordJudge, or a "
        "function with TRL's reward signature, e.g. my_rewards.keyword_reward, in the current folder or a package."
    )


def main(argv: list[str] | None = None) -> int:
    """`trl-latent eval [--config FILE.yaml] [--field value ...]`."""
    return run(PROG, _main, argv)


def add_parser(subparsers) -> None:
    register(subparsers, "eval", "N generations per test prompt, judge score (mean ± std), diversity", main)


if __name__ == "__main__":
    sys.exit(main())
