"""`trl-latent sft`: one supervised stage of building a latent action model, from a YAML config.

```
trl-latent sft --config examples/recipes/qwen2.5-vl-3b/1_inverse_warmup.yaml
trl-latent sft --config examples/recipes/qwen2.5-vl-3b/mmrole/5_world_sft.yaml --learning_rate 3e-5
accelerate launch --config_file examples/accelerate_configs/zero3_offload.yaml -m trl_latent.cli sft --config ...
```

`stage:` picks the stage (docs/stages.md): `inverse_warmup`, `projector_warmup`, `joint` and `policy_bc` read the
pretraining corpora (`paired_files`, `text_only_files`); `world_sft` reads the task's SFT split. Every
`LatentSFTConfig` field (learning rate, epochs, ablation switches, ...) is a YAML key and a `--flag`. Stage 1 wraps a
base VLM (`base_model`) with fresh latent modules; each later stage loads the previous stage's `output_dir`
(`model_name_or_path`). With `action_space: token` the command runs stock TRL SFT of a plain VLM on the task's SFT
split instead (`SFTConfig` fields): the starting point of the token-level RL baseline.

Order of work: parse and check every input, load the data, then load the model and train; so a wrong path or key
fails in seconds, before any model is loaded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ..paper import CODEBOOK_SIZE, INVERSE_LAYERS, POLICY_LAYERS
from ..training.stages import PRETRAIN_STAGE_NAMES
from .models import ACTION_SPACES, check_latent_model, check_model, load_processor, model_loading, processor_source
from .parsing import parse, peek, trl_parser
from .running import CommandError, register, run, say, summary_line
from .task_data import DatasetArguments, TaskArguments, check_data_source, check_files, load_dialogues
from .training import train_and_save

PROG = "trl-latent sft"
SUMMARY = "One supervised stage of a latent action model (stage: inverse_warmup, projector_warmup, joint, policy_bc or world_sft), or stock SFT of a plain VLM with action_space: token."


@dataclass
class SFTScriptArguments(TaskArguments, DatasetArguments):
    """The model to train and its data (the training settings are `LatentSFTConfig`'s, or `SFTConfig`'s; a saved
    latent model to continue, `model_name_or_path`, and how models load, the LoRA, dtype and 4/8-bit flags, are TRL's
    `ModelConfig`'s)."""

    action_space: str = field(
        default="latent",
        metadata={
            "help": "'latent': a latent-space stage with LatentSFTTrainer (`stage:` picks it). 'token': stock TRL "
            "SFT of a plain VLM on the task's SFT split, the token-level baseline's starting point.",
            "choices": list(ACTION_SPACES),
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "A base VLM (folder or hub id). Latent: wrapped with fresh latent modules (the first stage). "
            "Token: the model fine-tuned."
        },
    )
    codebook_size: int = field(default=CODEBOOK_SIZE, metadata={"help": "Latent actions |C| (with base_model)."})
    inverse_layers: int = field(
        default=INVERSE_LAYERS, metadata={"help": "Inverse dynamics decoder layers (with base_model)."}
    )
    policy_layers: int = field(default=POLICY_LAYERS, metadata={"help": "Policy decoder layers (with base_model)."})
    paired_files: list[str] | None = field(
        default=None,
        metadata={"help": "Paired image-text pretraining corpus: JSON or JSON-lines files of {id, images, messages}."},
    )
    text_only_files: list[str] | None = field(
        default=None, metadata={"help": "Text-only pretraining corpus: JSON or JSON-lines files of {id, messages}."}
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder the paired corpus's image paths are relative to (default: each file's folder)."},
    )

    def __post_init__(self):
        super().__post_init__()
        from ..modeling.configuration import LatentActionConfig

        # The latent model's own checks (one home for them): --codebook_size 0 fails here, before any model is built.
        LatentActionConfig(
            codebook_size=self.codebook_size, inverse_layers=self.inverse_layers, policy_layers=self.policy_layers
        )


def make_parser(action_space: str = "latent"):
    from trl import ModelConfig, SFTConfig

    from ..training.latent_sft_config import LatentSFTConfig

    config_class = SFTConfig if action_space == "token" else LatentSFTConfig
    return trl_parser((SFTScriptArguments, config_class, ModelConfig), PROG, SUMMARY)


def _check_inputs(script_args: SFTScriptArguments, training_args, latent: bool, model_path: str | None) -> str:
    """Every check that needs no model; returns what the run trains, for the heading. `model_path`: the saved latent
    model to continue (`model_name_or_path`)."""
    if latent and (script_args.base_model is None) == (model_path is None):
        raise CommandError(
            "give exactly one of base_model (a base VLM to wrap with fresh latent modules: the first stage) and "
            "model_name_or_path (the output_dir of the previous stage)."
        )
    if latent and script_args.base_model is not None:
        check_model(script_args.base_model, "base_model")
    elif latent:
        check_latent_model(model_path)
    else:
        if script_args.base_model is None:
            raise CommandError("action_space: token trains a plain VLM: set base_model (a folder or hub id).")
        check_model(script_args.base_model, "base_model")

    if latent and training_args.stage in PRETRAIN_STAGE_NAMES and script_args.dataset_name is not None:
        raise CommandError(
            f"dataset_name gives world_sft's and token SFT's dialogues; stage {training_args.stage} reads the "
            "pretraining corpus: set paired_files / text_only_files instead."
        )
    if latent and training_args.stage in PRETRAIN_STAGE_NAMES and _text_only(script_args, model_path):
        # A text-only base reads its text records as its one (observation) stream: no projector stage, no pairing.
        from ..training.stages import resolve_stage

        try:
            resolve_stage(training_args, text_only_base=True)
        except ValueError as err:
            raise CommandError(str(err)) from err
        files = (script_args.paired_files or []) + (script_args.text_only_files or [])
        if not files:
            raise CommandError(
                f"stage {training_args.stage} on a text-only base reads text records: set text_only_files."
            )
        check_files(files, "text_only_files")
        return f"stage {training_args.stage} (text-only base)"
    if latent and training_args.stage in PRETRAIN_STAGE_NAMES:
        if not script_args.paired_files:
            raise CommandError(
                f"stage {training_args.stage} reads the paired image-text pretraining corpus: set paired_files."
            )
        check_files(script_args.paired_files, "paired_files")
        from ..training.stages import resolve_stage

        if resolve_stage(training_args).uses("text"):
            if not script_args.text_only_files:
                raise CommandError(
                    f"stage {training_args.stage} mixes text-only data 1:1 with paired data: set text_only_files, or "
                    "use_text_only: false (the paper's 'without text-only data' ablation)."
                )
            check_files(script_args.text_only_files, "text_only_files")
        return f"stage {training_args.stage}"
    check_data_source(script_args, "world_sft" if latent else "token SFT")
    return f"stage {training_args.stage}" if latent else "token SFT"


def _datasets(script_args: SFTScriptArguments, training_args, latent: bool, model_path: str | None):
    """(paired, text-only) datasets of the stage."""
    from ..data.pretrain import BadRecordError, load_pretrain_corpus

    if latent and training_args.stage in PRETRAIN_STAGE_NAMES and _text_only(script_args, model_path):
        files = (script_args.paired_files or []) + (script_args.text_only_files or [])
        try:
            corpus = load_pretrain_corpus(files, skip_bad_records=training_args.skip_bad_records)
        except (BadRecordError, ValueError, FileNotFoundError) as err:
            raise CommandError(f"cannot read the pretraining corpus: {err}") from err
        if corpus.paired is not None:
            raise CommandError(
                f"{files} hold {len(corpus.paired)} record(s) with images, but the base is text-only: give it text "
                "records only (no `images` key)."
            )
        return corpus.text, None
    if latent and training_args.stage in PRETRAIN_STAGE_NAMES:
        from ..training.stages import resolve_stage

        skip = training_args.skip_bad_records
        uses_text = resolve_stage(training_args).uses("text")  # stages 1 and 2 read no text-only data
        try:
            paired = load_pretrain_corpus(script_args.paired_files, script_args.image_root, skip).paired
            text = load_pretrain_corpus(script_args.text_only_files, skip_bad_records=skip).text if uses_text else None
        except (BadRecordError, ValueError, FileNotFoundError) as err:
            raise CommandError(f"cannot read the pretraining corpus: {err}") from err
        if paired is None:
            raise CommandError(f"paired_files {script_args.paired_files} hold no paired record (with `images`).")
        if uses_text and text is None:
            raise CommandError(f"text_only_files {script_args.text_only_files} hold no text-only record.")
        return paired, text

    if latent:
        takes_images = not _text_only(script_args, model_path)
    else:
        from .models import is_text_only_model

        takes_images = not is_text_only_model(script_args.base_model)
    what = "world_sft" if latent else "token SFT"
    return load_dialogues(script_args, takes_images, what, conversational=latent), None


def _text_only(script_args: SFTScriptArguments, model_path: str | None) -> bool:
    """Whether the stage's model (the base to wrap, or the saved latent model's base) is a text-only causal LM."""
    from .models import is_text_only_model

    return is_text_only_model(script_args.base_model or model_path)


def _main(argv: list[str]) -> int:
    action_space = peek(argv, "action_space", "latent")
    if action_space not in ACTION_SPACES:
        raise CommandError(f"action_space must be one of {list(ACTION_SPACES)} (got {action_space!r}).")
    latent = action_space == "latent"
    # The training config is created before any model is loaded (ZeRO-3 partitions the weights as they load).
    script_args, training_args, model_args = parse(make_parser(action_space), argv, PROG)
    model_path = model_args.model_name_or_path
    what = _check_inputs(script_args, training_args, latent, model_path)
    peft_config, quantization_config = model_loading(model_args, training_args, latent, argv)
    paired, text = _datasets(script_args, training_args, latent, model_path)
    say(f"{PROG}: {what}, {len(paired)} records" + (f" + {len(text)} text-only" if text is not None else ""))

    from transformers import set_seed

    set_seed(training_args.seed)
    if latent:
        from ..modeling.model import LatentActionModel
        from ..training.latent_sft_trainer import LatentSFTTrainer

        # `--dtype`, when given: the command loads the model, so TRL is not handed model_init_kwargs to ignore.
        init_kwargs = dict(training_args.model_init_kwargs or {})
        dtype = init_kwargs.pop("dtype", None)
        training_args.model_init_kwargs = init_kwargs or None
        if script_args.base_model is not None:
            source = script_args.base_model
            model = LatentActionModel.from_base(
                source,
                quantization_config=quantization_config,
                codebook_size=script_args.codebook_size,
                inverse_layers=script_args.inverse_layers,
                policy_layers=script_args.policy_layers,
                dtype=dtype,
            )
        else:
            source = processor_source(model_path)
            model = LatentActionModel.from_pretrained(model_path, quantization_config=quantization_config, dtype=dtype)
        processor = load_processor(source)
        trainer = LatentSFTTrainer(
            model,
            training_args,
            train_dataset=paired,
            text_dataset=text,
            processing_class=processor,
            peft_config=peft_config,
        )
    else:
        from trl import SFTTrainer

        processor = load_processor(script_args.base_model)
        trainer = SFTTrainer(
            model=script_args.base_model,
            args=training_args,
            train_dataset=paired,
            processing_class=processor,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )

    result = train_and_save(trainer, processor, training_args.output_dir, training_args.resume_from_checkpoint, "loss")
    say(f"{PROG}: {what} done: {summary_line(result)}; saved to {training_args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`trl-latent sft [--config FILE.yaml] [--field value ...]`."""
    return run(PROG, _main, argv)


def add_parser(subparsers) -> None:
    register(subparsers, "sft", "a latent-space stage (stage: 1-5) or token SFT, from a YAML config", main)


if __name__ == "__main__":
    sys.exit(main())
