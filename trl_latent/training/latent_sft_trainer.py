"""`LatentSFTTrainer`: the five supervised stages that build the latent action space, as one `SFTTrainer` subclass.

The stage (a row of `trl_latent.training.stages.STAGES`) decides which module groups train, which loss terms
`compute_loss` evaluates, and which data streams the collator builds. Everything else is TRL's `SFTTrainer` (and
`transformers.Trainer`): optimiser, schedule, logging (`report_to`), checkpoints and resuming.

Losses (docs/architecture.md section 3). `e` are base states (detached unless the stage trains the base), steps are text
positions: the world model's logits at position t predict token t+1, the IDM's code for step t is read at t+1, and a
step counts when token t+1 is in the stream's `loss_mask` (text, not padding, not image tokens).

- `world/ce_paired`, `world/ce_text`: next-token cross-entropy of the world model with the IDM's codes (straight-through
  Gumbel one-hots in training, argmax in evaluation), or with the policy's argmax codes in `world_sft`.
- `inverse/entropy`, `inverse/entropy_text`: entropy of the IDM's code distribution; its weight is negative, so it is
  raised. `idm_entropy="per_step"` (the authors' code): the mean of the per-step entropies. `"batch_mean"`: the entropy
  of the distribution averaged over the batch's steps, which spreads the batch over codes while each step may still
  pick one code with confidence.
- `projector/nll_paired`, `projector/nll_inverse`: Gaussian NLL of P(e^T) against e^{V,T} and of P'(e^{V,T}) against
  e^T, averaged over text positions (e^T: the same ids run without pixels, aligned position by position).
- `projector/cycle`: NLL of P'(mean P(e^T)) against e^T on text-only data. P's mean is **not** detached here, so the
  cycle trains P as well as P'; it is detached where it feeds the IDM and the world model.
- `policy/bc_paired`, `policy/bc_text`: cross-entropy of the policy against the IDM's argmax codes (no Gumbel noise;
  `bc_target="argmax"`, the authors' code, with optional `bc_label_smoothing`) or against the IDM's code distribution
  at `bc_temperature` (`bc_target="soft"`). On text-only data both read `mean P(e^T)` (or raw e^T with
  `use_projector=False`). `policy/entropy`: the policy's mean per-step entropy, raised with `bc_entropy_weight`.

World-model terms run under the stage's world-output form (`StagePlan.world_output`), which the trainer writes into the
model's config. At the end of the stage the latent-space health metrics (`health/...`) are measured and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput
from trl import SFTTrainer

from ..data.collator import LatentDataCollator, training_chat_template
from ..data.pretrain import with_stream_indices
from ..metrics.codebook import codebook_usage
from ..metrics.latent_health import content_token_ids, latent_health
from ..modeling.model import LatentActionModel
from ..modeling.modules import entropy_from_logits, gaussian_nll
from .checkpointing import LatentCheckpointMixin
from .latent_sft_config import LatentSFTConfig
from .model_card import CardTraining, LatentModelCardMixin, stage_training
from .stages import StagePlan, resolve_stage
from .state_cache import BaseStateCache, cached_encode

logger = logging.getLogger(__name__)

__all__ = ["LatentSFTTrainer", "stage_losses"]


@dataclass
class LatentSFTOutput(ModelOutput):
    """What `compute_loss(..., return_outputs=True)` returns next to the loss (no vocabulary logits are kept)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    terms: dict | None = None


# --------------------------------------------------------------------------------------------------- loss pieces
def _encode(
    model: LatentActionModel,
    batch: dict,
    *,
    text_states=False,
    pixels=True,
    grad=False,
    text_positions="text",
    state_cache: BaseStateCache | None = None,
):
    if state_cache is not None and not grad:  # a frozen base: its states are computed once per record
        return cached_encode(
            model, state_cache, batch, with_text_states=text_states, pixels=pixels, text_positions=text_positions
        )
    return model.encode(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values") if pixels else None,
        batch.get("image_grid_thw") if pixels else None,
        batch.get("mm_token_type_ids"),
        with_pixels=pixels,
        with_text_states=text_states,
        grad_through_base=grad,
        text_positions=text_positions,
    )


def _steps(x: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """The rows of a per-position tensor (B, S, ...) at the masked steps t (0 <= t < S-1): (N, ...)."""
    return x[:, :-1][step_mask]


def _code_entropy(logits: torch.Tensor, form: str) -> torch.Tensor:
    """The IDM entropy bonus over steps `logits` (N, |C|): `"per_step"`, mean_t H(softmax(logits_t)) (the authors'
    code); `"batch_mean"`, H(mean_t softmax(logits_t))."""
    if form == "per_step":
        return entropy_from_logits(logits).mean()
    p = torch.softmax(logits.float(), dim=-1).mean(0)
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


# The fields of a [`LatentSFTConfig`] that `stage_losses` reads. `StageOptions` is derived from the config (same names,
# same defaults), so the two cannot drift; the trainer builds one from its args with `StageOptions.from_config`.
STAGE_OPTION_FIELDS = (
    "use_projector",
    "idm_entropy",
    "text_state_positions",
    "bc_target",
    "bc_temperature",
    "bc_label_smoothing",
    "world_sft_codes",
)


def _stage_options_class():
    config_fields = {f.name: f for f in dataclasses.fields(LatentSFTConfig)}
    cls = dataclasses.make_dataclass(
        "StageOptions",
        [
            (name, config_fields[name].type, dataclasses.field(default=config_fields[name].default))
            for name in STAGE_OPTION_FIELDS
        ],
        frozen=True,
        namespace={
            "__doc__": "The per-run choices `stage_losses` reads, with [`LatentSFTConfig`]'s defaults (a config carries "
            "them all: `StageOptions.from_config(config)`).",
            "from_config": classmethod(
                lambda cls, config: cls(**{name: getattr(config, name) for name in STAGE_OPTION_FIELDS})
            ),
        },
    )
    cls.__module__ = __name__
    return cls


StageOptions = _stage_options_class()


def _world_ce(model, e_steps, codes, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """World-model cross-entropy and top-1 accuracy at the selected steps. The world model is position-wise, so it
    runs on the selected steps only (N, d) and never builds (B, S, |V|) logits."""
    logits = model.world_logits(e_steps.unsqueeze(0), codes.unsqueeze(0))[0]
    ce = F.cross_entropy(logits, targets)
    accuracy = (logits.detach().argmax(-1) == targets).float().mean()
    return ce, accuracy


def _cloning_term(model, e, base, step_mask, options: StageOptions):
    """Behaviour cloning of the IDM's codes into the policy at the masked steps: `(cross-entropy, policy logits (N,
    K), IDM argmax (N,))`. Targets are the IDM's argmax codes or, with `bc_target="soft"`, its code distribution at
    `bc_temperature` (no Gumbel noise, no gradient into the IDM)."""
    with torch.no_grad():
        inverse = _steps(model.inverse_logits(e, base), step_mask).float()
        labels = inverse.argmax(-1)
    logits = _steps(model.policy_logits(e, base), step_mask).float()
    # Class indices (argmax) or the IDM's code distribution (soft): F.cross_entropy takes either.
    targets = torch.softmax(inverse / options.bc_temperature, dim=-1) if options.bc_target == "soft" else labels
    return F.cross_entropy(logits, targets, label_smoothing=options.bc_label_smoothing), logits, labels


def _targets(batch: dict, step_mask: torch.Tensor) -> torch.Tensor:
    """The next tokens t+1 at the masked steps t: (N,)."""
    return batch["input_ids"][:, 1:][step_mask]


def _gaussian_nll_mean(output, target, mask) -> torch.Tensor:
    return gaussian_nll(output.mean[mask].float(), output.logvar[mask].float(), target[mask].float()).mean()


def _inverse_world_terms(model, e, base, batch, step_mask, out, metrics, suffix, plan: StagePlan, entropy_form):
    """World CE with the IDM's codes, and the IDM entropy, on one stream. Returns the hard codes (N,)."""
    inverse = _steps(model.inverse_logits(e, base), step_mask)
    codes = model.sample_inverse_codes(inverse)  # straight-through Gumbel one-hots in training, argmax in eval
    ce, accuracy = _world_ce(model, _steps(e, step_mask), codes, _targets(batch, step_mask))
    out[f"world/ce_{suffix}"] = ce
    metrics[f"world/accuracy_{suffix}"] = accuracy
    entropy_name = "inverse/entropy" if suffix == "paired" else "inverse/entropy_text"
    if plan.has(entropy_name):
        out[entropy_name] = _code_entropy(inverse, entropy_form)
    return codes.detach().argmax(-1)


def _text_input_states(model, text_states, use_projector: bool):
    """What text-only data feeds the IDM and the policy: mean P(e^T) (detached), or raw e^T without the projector.
    Also returns P's output, undetached, for the cycle loss."""
    if not use_projector:
        return text_states, None
    projected = model.project(text_states)
    return projected.mean.detach(), projected


def stage_losses(
    model: LatentActionModel,
    inputs: dict,
    plan: StagePlan,
    options: StageOptions | None = None,
    state_cache: BaseStateCache | None = None,
):
    """Evaluate the active loss terms of `plan` on a collated batch.

    Args:
        model ([`LatentActionModel`]): the (unwrapped) latent model.
        inputs (`dict`): `{"paired": {...}, "text": {...}}` from [`LatentDataCollator`].
        plan ([`StagePlan`]): the resolved stage.
        options ([`StageOptions`], *optional*): whether text-only states go through the projector, the entropy form,
            text-state positions, behaviour-cloning targets (defaults: the authors' choices, `StageOptions()`).
        state_cache ([`~trl_latent.training.state_cache.BaseStateCache`], *optional*): where a frozen base's states
            are reused from (and stored); ignored when the stage trains the base.

    Returns:
        `(terms, metrics)`: `terms` maps each active loss term to its (unweighted) value, with gradient; `metrics` holds
        detached diagnostics (codebook usage, accuracies).
    """
    options = options or StageOptions()
    use_projector = options.use_projector
    entropy_form = options.idm_entropy
    terms: dict[str, torch.Tensor] = {}
    metrics: dict[str, Any] = {}
    codes = []
    paired = inputs["paired"]
    paired_steps = paired["loss_mask"][:, 1:]

    # Dispatch on what the row asks for (its terms and code source), not on the stage's name.
    cloning = plan.stage.code_source != "policy" and any(name.startswith("policy/bc_") for name in plan.weights)
    if not cloning and plan.stage.code_source != "policy":  # inverse_warmup, projector_warmup, joint
        needs_world = plan.has("world/ce_paired")
        needs_projector = plan.has("projector/nll_paired")
        base = _encode(
            model,
            paired,
            text_states=needs_projector,
            text_positions=options.text_state_positions,
            state_cache=state_cache,
        )
        e = base.states
        if needs_world:
            codes.append(
                _inverse_world_terms(
                    model, e, base, paired, paired_steps, terms, metrics, "paired", plan, entropy_form
                )
            )
        if needs_projector:
            positions = paired["loss_mask"]
            terms["projector/nll_paired"] = _gaussian_nll_mean(model.project(base.text_states), e, positions)
            terms["projector/nll_inverse"] = _gaussian_nll_mean(model.inverse_project(e), base.text_states, positions)
        if plan.uses("text"):
            text = inputs["text"]
            text_base = _encode(model, text, pixels=False, state_cache=state_cache)
            e_text, projected = _text_input_states(model, text_base.text_states, use_projector)
            text_steps = text["loss_mask"][:, 1:]
            codes.append(
                _inverse_world_terms(
                    model, e_text, text_base, text, text_steps, terms, metrics, "text", plan, entropy_form
                )
            )
            if plan.has("projector/cycle"):
                # P's mean is not detached: the cycle trains P and P' (docs/architecture.md section 3, stage 3).
                back = model.inverse_project(projected.mean)
                terms["projector/cycle"] = _gaussian_nll_mean(back, text_base.text_states, text["loss_mask"])

    elif cloning:  # policy_bc
        correct, total = 0.0, 0
        entropies = []
        streams = [("paired", paired, True)]
        if plan.uses("text"):
            streams.append(("text", inputs["text"], False))
        for suffix, batch, pixels in streams:
            base = _encode(model, batch, pixels=pixels, state_cache=state_cache)
            e = base.states if pixels else _text_input_states(model, base.text_states, use_projector)[0]
            step_mask = batch["loss_mask"][:, 1:]
            term, logits, labels = _cloning_term(model, e, base, step_mask, options)
            terms[f"policy/bc_{suffix}"] = term
            entropies.append(entropy_from_logits(logits))
            predicted = logits.detach().argmax(-1)
            correct += float((predicted == labels).sum())
            total += labels.numel()
            codes.append(predicted)
        metrics["policy/bc_accuracy"] = correct / max(total, 1)
        entropy = torch.cat(entropies).mean()
        if plan.has("policy/entropy"):
            terms["policy/entropy"] = entropy
        else:
            metrics["policy/entropy"] = entropy.detach()

    else:  # world_sft: the policy's codes drive the world model
        base = _encode(model, paired, pixels=True, grad=plan.base_trainable)
        e = base.states
        with torch.no_grad():  # the policy (or the IDM) is frozen: its argmax codes drive the world model
            if options.world_sft_codes == "inverse":
                logits = model.inverse_logits(e.detach(), base)
            else:
                logits = model.policy_logits(e.detach(), base)
            world_codes = _steps(logits, paired_steps).argmax(-1)
        ce, accuracy = _world_ce(model, _steps(e, paired_steps), world_codes, _targets(paired, paired_steps))
        terms["world/ce_paired"] = ce
        metrics["world/accuracy_paired"] = accuracy
        codes.append(world_codes)
        if plan.has("policy/bc_task"):  # the policy keeps cloning the IDM, now on the task dialogues
            term, logits, labels = _cloning_term(model, e.detach(), base, paired_steps, options)
            terms["policy/bc_task"] = term
            metrics["policy/bc_accuracy"] = (logits.detach().argmax(-1) == labels).float().mean()

    if codes:
        all_codes = torch.cat(codes)
        if all_codes.numel():
            metrics.update(codebook_usage(all_codes, model.config.codebook_size))
    missing = set(plan.weights) - set(terms)
    if missing:  # pragma: no cover - a stage row and this function out of step
        raise RuntimeError(f"Stage {plan.name!r} did not compute its loss terms {sorted(missing)}.")
    return terms, metrics


def _ensure_pad_token(tokenizer) -> None:
    """A tokenizer without a pad token (Llama-family tokenizers often have none) pads with its EOS token, as TRL's
    trainers do; batches are right-padded and the loss masks read the attention mask, so EOS tokens stay trained."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(f"The tokenizer ({type(tokenizer).__name__}) has no pad and no EOS token; set `pad_token`.")
    logger.info("The tokenizer has no pad token; padding with its EOS token %r.", tokenizer.eos_token)
    tokenizer.pad_token = tokenizer.eos_token


# --------------------------------------------------------------------------------------------------- trainer
class LatentSFTTrainer(LatentCheckpointMixin, LatentModelCardMixin, SFTTrainer):
    r"""
    Trainer for the five supervised stages that build a latent action space (docs/architecture.md section 3): inverse
    dynamics warm-up, projector warm-up, joint inverse dynamics and projector training (with the cycle loss), policy
    behaviour cloning and action-guided task SFT of the base. The stage is `args.stage`; its row of the stage table
    (`trl_latent.training.stages.STAGES`) sets the trainable modules (every other parameter is frozen), the loss
    terms and the data streams. Paired and text-only records are mixed 1:1 per step for the stages that use both.

    Each stage saves with `trainer.save_model(dir)` a model the next stage loads with
    `LatentActionModel.from_pretrained(dir)` (or by passing `dir` as `model`). `train(resume_from_checkpoint=...)`
    continues a run exactly: the checkpoint's weights load whichever key layout transformers wrote the base in, and a
    LoRA adapter of the base is restored with them (see `trl_latent.training.checkpointing`).

    Args:
        model (`str` or [`LatentActionModel`]):
            The latent model, or the folder of a saved one.
        args ([`LatentSFTConfig`], *optional*):
            The stage and its settings.
        train_dataset (`datasets.Dataset`):
            Paired image-text records in TRL's conversational VLM format (`messages` + `images`, or `text` +
            `images`); the task dialogues for `world_sft` (images optional there). Pretraining JSON files load into
            this format with [`~trl_latent.data.pretrain.load_pretrain_corpus`].
        text_dataset (`datasets.Dataset`, *optional*):
            Text-only records (`messages` or `text`), required by `joint` and `policy_bc` unless
            `use_text_only=False`.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*):
            Paired records to evaluate on (mixed with `text_dataset` like the training data).
        processing_class (`ProcessorMixin`, *optional*):
            The base model's processor. Defaults to the one saved with the model or its base.
        callbacks (`list[TrainerCallback]`, *optional*):
            As in [`~trl.SFTTrainer`].
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            As in [`~trl.SFTTrainer`].
        peft_config (`peft.PeftConfig`, *optional*):
            Only for `world_sft`: a LoRA adapter put on the **base** model, which then is the only thing that trains
            (instead of the vision tower + last layers + final norm + embeddings).
        health_dataset (`datasets.Dataset`, *optional*):
            Dialogues (`messages` + `images`) the latent-space health metrics are measured on at the end of the stage
            (`args.health_samples` records, answer tokens only); defaults to the eval dataset, else the train dataset.
            Give held-out task dialogues to see what RL will start from.
        health_content_words (`dict[str, list[str]]`, *optional*):
            Content words by kind (`{"colour": ["red", "green"], "count": ["one", "two"]}`): the health metrics then
            also measure content controllability (`health/content_controllability`, overall and per kind): at the
            answer positions whose token begins a word of a kind, how many distinct words of that kind some code makes
            the world model say there. Words are matched by their first token, at the start of a line and after a
            space; list capitalised forms as words of their own.
        state_cache ([`~trl_latent.training.state_cache.BaseStateCache`], *optional*):
            Where the frozen base's per-record states are kept (`args.cache_base_states`); pass one cache to the
            trainers of stages 1-4 to reuse states across stages (its keys carry a fingerprint of the base). Defaults to
            a new cache of `args.base_state_cache_bytes`.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from PIL import Image
    >>> from transformers import AutoProcessor
    >>> from trl_latent.modeling import LatentActionModel
    >>> from trl_latent.modeling.tiny import tiny_vlm_path
    >>> from trl_latent.training.latent_sft_config import LatentSFTConfig
    >>> from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    >>> colours = ["red", "green", "blue", "yellow"]
    >>> dataset = Dataset.from_list([
    ...     {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
    ...                   {"role": "assistant", "content": [{"type": "text", "text": f"It is {c}."}]}],
    ...      "images": [Image.new("RGB", (56, 56), c)]}
    ...     for c in colours * 2
    ... ])
    >>> path = tiny_vlm_path("tiny", corpus=["Colour?"] + [f"It is {c}." for c in colours])
    >>> model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    >>> args = LatentSFTConfig("out", stage="inverse_warmup", max_steps=2, per_device_train_batch_size=4,
    ...                        use_cpu=True, bf16=False, report_to="none", save_strategy="no")
    >>> trainer = LatentSFTTrainer(model, args, train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(path))
    >>> trainer.train().global_step
    2
    ```
    """

    _tag_names = ["trl", "sft", "trl-latent", "latent-sft"]
    _name = "LatentSFT"

    def __init__(
        self,
        model: str | LatentActionModel,
        args: LatentSFTConfig | None = None,
        train_dataset=None,
        text_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        health_dataset=None,
        health_content_words=None,
        state_cache: BaseStateCache | None = None,
    ):
        from datasets import Dataset
        from transformers import AutoProcessor, AutoTokenizer, PreTrainedTokenizerBase, ProcessorMixin
        from trl.chat_template_utils import has_generation_markers

        if args is None:
            args = LatentSFTConfig("latent-sft")
        elif not isinstance(args, LatentSFTConfig):
            raise TypeError(
                f"LatentSFTTrainer needs a LatentSFTConfig (it holds the stage), got {type(args).__name__}."
            )

        if isinstance(model, str):
            model = LatentActionModel.from_pretrained(model)
        if not isinstance(model, LatentActionModel):
            raise TypeError(
                f"LatentSFTTrainer trains a LatentActionModel (got {type(model).__name__}); build one with "
                "`LatentActionModel.from_base(base_path)` or load a saved stage with `LatentActionModel.from_pretrained`."
            )
        # A text-only base (Qwen2, Llama) reads its text records as the paired (observation) stream: no projector, no
        # second text-only stream (docs/stages.md, "A text-only base").
        text_only_base = not model.backbone.is_vlm
        plan = resolve_stage(args, text_only_base=text_only_base)
        if text_only_base and text_dataset is not None:
            if train_dataset is not None:
                raise ValueError(
                    "A text-only base reads one stream of text records, `train_dataset`; `text_dataset` is the text-only "
                    "stream of a vision-language base. Pass the text records as `train_dataset` (concatenate them)."
                )
            train_dataset, text_dataset = text_dataset, None

        if train_dataset is None:
            records = "text records" if text_only_base else "paired image-text records"
            raise ValueError(f"`train_dataset` ({records}) is required.")
        for name, dataset in (("train_dataset", train_dataset), ("text_dataset", text_dataset)):
            if dataset is not None and not isinstance(dataset, Dataset):
                raise TypeError(
                    f"`{name}` must be a map-style `datasets.Dataset` (got {type(dataset).__name__}): the 1:1 mixing "
                    "of the streams indexes records. Load streaming data with `streaming=False`."
                )
        if plan.uses("text") and text_dataset is None:
            raise ValueError(
                f"Stage {plan.name!r} mixes text-only data 1:1 with paired data, but no `text_dataset` was given. Pass "
                "text-only records (`messages` or `text`) as `text_dataset=`, or set `use_text_only=False` (the "
                "paper's 'without text-only data' ablation)."
            )
        if text_dataset is not None and not plan.uses("text"):
            logger.warning(
                "Stage %r with these switches reads no text-only data; `text_dataset` is ignored.", plan.name
            )
            text_dataset = None

        # Trainable set: the stage's module groups, or the base tail / a LoRA adapter for world_sft.
        if peft_config is not None:
            if plan.name != "world_sft":
                raise ValueError(
                    f"`peft_config` puts a LoRA adapter on the base, which only the world_sft stage trains (stage is "
                    f"{plan.name!r}); drop `peft_config` for this stage."
                )
            from peft import PeftModel, get_peft_model

            if isinstance(model.base, PeftModel):
                raise ValueError("The base already carries a PEFT adapter; merge it or drop `peft_config`.")
            model.set_trainable(plan.trainable)  # the policy, when world_sft_bc_weight > 0
            model.base = get_peft_model(model.base, peft_config)  # of the base, only the adapter requires grad
        else:
            base_modules = model.base_tail_prefixes(args.world_sft_last_layers) if plan.base_trainable else None
            model.set_trainable(plan.trainable, base_modules=base_modules)

        if processing_class is None:
            source = model.config.name_or_path or model.config.base_model_name_or_path
            loader = AutoTokenizer if text_only_base else AutoProcessor
            processing_class = loader.from_pretrained(source)
        if text_only_base:
            if isinstance(processing_class, ProcessorMixin):
                processing_class = processing_class.tokenizer
            if not isinstance(processing_class, PreTrainedTokenizerBase):
                raise TypeError(
                    f"A text-only base ({model.backbone.model_type}) takes its tokenizer as `processing_class`, got "
                    f"{type(processing_class).__name__}."
                )
            _ensure_pad_token(processing_class)
            # The latent model pads as its tokenizer does (else `Trainer.train` aligns the ids with a notice).
            for config in (model.config, model.generation_config):
                if config is not None and getattr(config, "pad_token_id", None) is None:
                    config.pad_token_id = processing_class.pad_token_id
        elif not isinstance(processing_class, ProcessorMixin):
            raise TypeError(
                "LatentSFTTrainer needs the base model's processor (a ProcessorMixin such as Qwen2_5_VLProcessor), got "
                f"{type(processing_class).__name__}; pass `processing_class=` explicitly. (A text-only base, Qwen2 or "
                "Llama, takes its tokenizer.)"
            )

        chat_template = None
        if args.assistant_only_loss:
            chat_template = training_chat_template(processing_class)
        # A tokenizer whose chat template TRL has no training version of (SmolLM2's ChatML, ...) masks its assistant
        # tokens from the template's rendering (`assistant_token_mask`); TRL's SFTTrainer would refuse it.
        rendered_assistant_mask = (
            args.assistant_only_loss
            and chat_template is None
            and not has_generation_markers(processing_class.chat_template)
        )
        collator = LatentDataCollator(
            processing_class,
            text_dataset=text_dataset,
            streams=plan.streams,
            paired_requires_image=plan.paired_requires_image,
            max_length=args.max_length,
            assistant_only_loss=args.assistant_only_loss,
            chat_template=chat_template,
            pad_to_multiple_of=args.pad_to_multiple_of,
            skip_bad_records=args.skip_bad_records,
            dataset_text_field=args.dataset_text_field,
        )
        text = text_dataset if plan.uses("text") else None
        train_dataset = with_stream_indices(train_dataset, text, seed=args.seed)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: with_stream_indices(v, text, seed=args.seed) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = with_stream_indices(eval_dataset, text, seed=args.seed)

        if plan.world_output is not None:
            # The stage's world-output form travels in the model's config: saved with it, read by RL and inference.
            model.config.world_output = plan.world_output
        if health_dataset is None:
            health_dataset = eval_dataset if isinstance(eval_dataset, Dataset) else None
        self._health_source = health_dataset if health_dataset is not None else train_dataset
        health_template = chat_template if args.assistant_only_loss else training_chat_template(processing_class)
        self._health_collator = LatentDataCollator(
            processing_class,
            streams=("paired",),
            paired_requires_image=False,
            max_length=args.max_length,
            assistant_only_loss=True,
            chat_template=health_template,
            skip_bad_records=True,
            dataset_text_field=args.dataset_text_field,
        )
        self._health_tokenizer = getattr(processing_class, "tokenizer", processing_class)
        self._health_content_words = None
        if health_content_words is not None:
            # A malformed mapping fails here rather than at the end of the stage.
            content_token_ids(self._health_tokenizer, health_content_words)
            self._health_content_words = {kind: list(words) for kind, words in health_content_words.items()}
        self.health: dict[str, float] = {}

        self.stage_plan = plan
        self.text_dataset = text_dataset
        # TRL's SFTTrainer looks up a training chat template when `assistant_only_loss` is on and fails for one it does
        # not know; this trainer's collator masks the assistant tokens itself, so TRL is not asked.
        if rendered_assistant_mask:
            args.assistant_only_loss = False
        try:
            super().__init__(
                model=model,
                args=args,
                data_collator=collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
            )
        finally:
            if rendered_assistant_mask:
                args.assistant_only_loss = True
        self._skipped_records = 0
        self._state_cache = None
        if args.cache_base_states and not plan.base_trainable:
            from transformers.integrations import is_deepspeed_zero3_enabled

            if is_deepspeed_zero3_enabled():
                logger.info("Frozen-base state cache off under DeepSpeed ZeRO-3 (every process runs every base pass).")
            else:
                self._state_cache = (
                    state_cache if state_cache is not None else BaseStateCache(args.base_state_cache_bytes)
                )

    def _model_card_training(self) -> CardTraining:
        """What the saved model's card says trained it: this stage (`trl_latent.training.model_card`)."""
        return stage_training(self.stage_plan)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """`Trainer.train`, then the latent-space health metrics of the trained model (logged, and kept in
        `self.health`)."""
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        if self.args.health_samples > 0:
            self.health = self.measure_health()
            if self.health:
                self.log(dict(self.health))
        return output

    def measure_health(self, dataset=None, num_samples: int | None = None, batch_size: int = 16) -> dict[str, float]:
        """The latent-space health metrics (`trl_latent.metrics.latent_health`) of the model as it is now, on the
        first `num_samples` (default `args.health_samples`) records of `dataset` (default: the health dataset)."""
        dataset = self._health_source if dataset is None else dataset
        n = min(len(dataset), self.args.health_samples if num_samples is None else num_samples)
        records = [dataset[i] for i in range(n)]
        batches = [self._health_collator(records[i : i + batch_size]) for i in range(0, n, batch_size)]
        device = self.accelerator.device
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b["paired"].items()} for b in batches]
        if self._state_cache is not None:  # a frozen base: the health records' states are computed once, then reused
            latent = self.accelerator.unwrap_model(self.model)
            for batch in batches:
                batch["states"] = cached_encode(latent, self._state_cache, batch).states
        # Through the wrapped model's forward, so ZeRO-3 gathers the parameters it reads.
        content = {"content_words": self._health_content_words, "tokenizer": self._health_tokenizer}
        latent = self.accelerator.unwrap_model(self.model)
        vocab, budget = latent.backbone.lm_head.weight.shape[0], self.args.health_logits_budget
        caps = {
            "positions": max(1, budget // (4 * vocab)) if budget else None,
            "sweep_positions": max(1, budget // (latent.config.codebook_size * vocab)) if budget else None,
        }
        return self.model_wrapped(
            latent_fn=lambda model, **_: latent_health(model, batches, seed=self.args.seed, **caps, **content)
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The weighted sum of the stage's active loss terms; every term (unweighted) and the diagnostics are logged
        under their names (`world/ce_paired`, `projector/cycle`, `codebook/used`, ...)."""
        mode = "train" if model.training else "eval"
        # Through the (possibly DDP/DeepSpeed-wrapped) model's forward, so gradients are synchronised.
        terms, metrics = model(
            latent_fn=stage_losses,
            inputs=inputs,
            plan=self.stage_plan,
            options=StageOptions.from_config(self.args),
            state_cache=self._state_cache,
        )
        loss = sum(weight * terms[name] for name, weight in self.stage_plan.weights.items())

        logged = self._metrics[mode]
        for name, value in terms.items():
            logged[name].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
        for name, value in metrics.items():
            logged[name].append(float(value))
        if mode == "train":
            self._skipped_records += int(self.accelerator.gather_for_metrics(inputs["skipped_records"]).sum())
            logged["data/skipped_records"] = [self._skipped_records]
        return (loss, LatentSFTOutput(loss=loss.detach(), terms=terms)) if return_outputs else loss
