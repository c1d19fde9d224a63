"""`trl-latent inspect`: what each latent action of a saved latent action model does.

```
trl-latent inspect --model_name_or_path outputs/qwen2.5-vl-3b/4_policy_bc --paired_files data/pretrain/paired.jsonl
trl-latent inspect --model_name_or_path outputs/shapes/world_sft --task mmrole --task_root data/shapes
```

Runs the model over records (the task's `split`, or the paired pretraining corpus) and, for every code: how often the
inverse dynamics model (`code_source: inverse`, what the data did) or the policy (`policy`, what the agent would do)
picks it, the tokens the world model emits most when that code is forced, and examples of where it was picked (the
text before the step and the token that followed). Prints a table of the used codes and writes `codes.json` to
`output_dir` when given. Runs through `trl_latent.modeling.inspection.inspect_codes`.
"""

from __future__ import annotations

import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..modeling.inspection import inspect_codes
from .models import check_latent_model, is_text_only_model, load_processor, processor_source
from .parsing import parse, trl_parser
from .running import CommandError, register, run
from .task_data import TaskArguments, check_files, check_task, load_task

PROG = "trl-latent inspect"
SUMMARY = "What each latent action does: usage, the tokens the world model emits for it, examples."


# The report options default to the library function's own.
_LIBRARY_DEFAULTS = inspect.signature(inspect_codes).parameters


@dataclass
class InspectArguments(TaskArguments):
    """The model, the records to run it on, and what to report."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved latent action model."})
    split: str = field(default="sft", metadata={"help": "The task split to read (with task and task_root)."})
    paired_files: list[str] | None = field(
        default=None, metadata={"help": "Paired pretraining files to read instead of a task split."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Folder the paired files' image paths are in."})
    code_source: str = field(
        default=_LIBRARY_DEFAULTS["code_source"].default,
        metadata={"help": "Label steps with the inverse dynamics model ('inverse') or the policy ('policy').",
                  "choices": ["inverse", "policy"]},
    )  # fmt: skip
    max_records: int = field(default=64, metadata={"help": "Records to run the model on."})
    batch_size: int = field(default=8, metadata={"help": "Records per forward pass."})
    top_n: int = field(
        default=_LIBRARY_DEFAULTS["top_n"].default, metadata={"help": "Most emitted tokens shown per code."}
    )
    examples: int = field(default=2, metadata={"help": "Examples shown per code."})
    output_dir: str | None = field(default=None, metadata={"help": "Where codes.json goes (optional)."})


def _records(args: InspectArguments):
    from ..data.pretrain import BadRecordError, load_pretrain_corpus

    if args.paired_files:
        check_files(args.paired_files, "paired_files")
        try:
            corpus = load_pretrain_corpus(args.paired_files, args.image_root)
        except (BadRecordError, ValueError) as err:
            raise CommandError(f"cannot read the paired corpus: {err}") from err
        dataset = corpus.paired
        if dataset is None and is_text_only_model(args.model_name_or_path):
            dataset = corpus.text  # a text-only base reads text records
        if dataset is None:
            raise CommandError(f"paired_files {args.paired_files} hold no paired record.")
    else:
        from ..data.formats import to_sft

        check_task(args, "inspect (or set paired_files)")
        dataset = to_sft(load_task(args, [args.split])[args.split])
    return dataset.select(range(min(args.max_records, len(dataset))))


def format_report(report: list[dict]) -> str:
    """The used codes as a markdown table: uses, share, the world model's top tokens, examples."""
    lines = [
        "| code | uses | share | world model emits most | examples (context -> next token) |",
        "|---:|---:|---:|---|---|",
    ]
    for row in report:
        if row["count"] == 0:
            continue
        tokens = ", ".join(f"{tok!r} ({share:.0%})" for tok, share in row["top_tokens"])
        shown = "; ".join(f"{ex['context'][-40:]!r} -> {ex['next']!r}" for ex in row["examples"])
        lines.append(f"| {row['code']} | {row['count']} | {row['frequency']:.1%} | {tokens} | {shown} |")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    (args,) = parse(trl_parser((InspectArguments,), PROG, SUMMARY), argv, PROG)
    if args.model_name_or_path is None:
        raise CommandError("set model_name_or_path: a saved latent action model.")
    check_latent_model(args.model_name_or_path, command="inspect")
    dataset = _records(args)

    import torch
    from tqdm.auto import tqdm

    from ..data.collator import LatentDataCollator
    from ..modeling.inspection import inspect_codes
    from ..modeling.model import LatentActionModel

    processor = load_processor(processor_source(args.model_name_or_path))
    model = LatentActionModel.from_pretrained(args.model_name_or_path)
    collate = LatentDataCollator(processor, paired_requires_image=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    def batches():
        starts = range(0, len(dataset), args.batch_size)
        for start in tqdm(starts, desc="inspect", unit="batch"):
            rows = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
            batch = collate(rows)["paired"]
            yield {k: v.to(device) for k, v in batch.items() if k != "loss_mask"}

    report = inspect_codes(
        model,
        batches(),
        getattr(processor, "tokenizer", processor),
        code_source=args.code_source,
        top_n=args.top_n,
        examples=args.examples,
    )
    used = sum(row["count"] > 0 for row in report)
    print(format_report(report))
    print(f"{PROG}: {used} of {len(report)} codes used on {len(dataset)} records ({args.code_source} codes)")
    if args.output_dir is not None:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "codes.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"{PROG}: written to {args.output_dir}/codes.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`trl-latent inspect [--config FILE.yaml] [--field value ...]`."""
    return run(PROG, _main, argv)


def add_parser(subparsers) -> None:
    register(subparsers, "inspect", "what each latent action does: usage, top tokens, examples", main)


if __name__ == "__main__":
    sys.exit(main())
