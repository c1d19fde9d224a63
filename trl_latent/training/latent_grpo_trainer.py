"""`LatentGRPOTrainer`: GRPO-family RL over the latent actions of a [`~trl_latent.LatentActionModel`] (stage 6).

A thin subclass of TRL's `GRPOTrainer` (docs/architecture.md section 4). What changes, and where:

- **Rollouts** (`_generate_single_turn`): TRL tokenises, pads and unwraps the model as usual; only the decoding call is
  replaced by latent decoding (the policy samples a code per step, the frozen world model turns it into the next
  token). Completions are text tokens, so reward functions see real text. The rollout's codes, sampling
  log-probabilities and base states are kept.
- **Batch** (`_generate_and_score_completions`): the codes (B, T), the base states (B, P+T-1, d) and their position ids
  (made batch-first: (B, 3, S) for mRoPE) join TRL's batch dict, so TRL's shuffle and split keep them aligned with
  their rows.
- **Old log-probabilities** (`_get_per_token_logps_and_entropies`): TRL asks for them only when the update is off-policy;
  the policy that sampled the codes *is* the old policy, so they are the rollout's sampling log-probabilities.
- **Loss** (`_compute_loss`): code log-probabilities and entropies from the policy run on the reused states (no base
  pass), the reference from a frozen copy of the policy modules only, and the objective from the pluggable loss
  object (`PolicyLossMixin`, shared with `TokenGRPOTrainer`).

TRL's own reference model (which reloads `config._name_or_path` when `beta > 0`) is never built.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object, is_peft_model
from transformers import AutoConfig, AutoProcessor, ProcessorMixin, TrainerCallback
from transformers.utils import ModelOutput
from trl import GRPOTrainer
from trl.trainer.utils import use_adapter

from ..data.prompt_datasets import check_prompt_dataset
from ..metrics.codebook import code_counts, log_code_histogram, usage_from_counts
from ..modeling.generation import latent_generate
from ..modeling.model import LatentActionModel
from ..modeling.modules import DecoderStack
from .checkpointing import LatentCheckpointMixin
from .latent_grpo_config import LatentGRPOConfig
from .model_card import CardTraining, LatentModelCardMixin, rl_training
from .policy_loss_mixin import PolicyLossMixin, build_diversity_embedder, resolve_policy_loss

logger = logging.getLogger(__name__)

__all__ = ["LatentGRPOTrainer", "POLICY_LORA_TARGET_MODULES", "policy_peft_config"]

# A PEFT `target_modules` regex that puts LoRA on the policy's attention and MLP projections only.
POLICY_LORA_TARGET_MODULES = r".*\bpolicy\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

# The TR-DPO reference policy (`sync_ref_model`), saved in each checkpoint folder so a resumed run continues from it.
REFERENCE_POLICY_FILE = "reference_policy.safetensors"

# Keys the latent trainer adds to TRL's batch dict (all batch-first).
CODES_KEY = "codes"
STATES_KEY = "rollout_states"
POSITIONS_KEY = "rollout_position_ids"


@dataclass
class LatentPolicyOutput(ModelOutput):
    """Policy logits over the codes at every position of `states`, with the states, positions and mask they were
    computed from (the reference reuses them). The logits at position t choose the code that produces token t+1, so
    with a prompt of width P, position P-1+j chooses completion step j."""

    logits: torch.Tensor | None = None
    states: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


def policy_pass(
    latent: LatentActionModel,
    *,
    attention_mask: torch.Tensor,
    states: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    input_ids: torch.LongTensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.LongTensor | None = None,
    mm_token_type_ids: torch.Tensor | None = None,
) -> LatentPolicyOutput:
    """Policy logits for a prompt + completion batch.

    With `states` (B, S, d) and their `position_ids`, the base is not run (rollout states reuse). Otherwise the base
    encodes `input_ids` (B, S+1) once, without gradient, and the last position (never fed back) is dropped.
    """
    if states is None:
        base = latent.encode(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
        states, position_ids, attention_mask = base.states[:, :-1], base.position_ids[..., :-1], attention_mask[:, :-1]
    view = latent.states_view(states, attention_mask, position_ids)
    return LatentPolicyOutput(
        logits=latent.policy_logits(states, view),
        states=states,
        position_ids=position_ids,
        attention_mask=attention_mask,
    )


def _fit(t: torch.Tensor, length: int, dim: int = 1) -> torch.Tensor:
    """Cut or zero-pad `t` along `dim` to `length` (padded steps are masked out of every loss and metric)."""
    size = t.size(dim)
    if size >= length:
        return t.narrow(dim, 0, length)
    shape = list(t.shape)
    shape[dim] = length - size
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def policy_peft_config(peft_config, latent: LatentActionModel):
    """The adapter config `LatentGRPOTrainer` applies: the given one, put on the policy (the only module RL trains).

    - `task_type` is dropped: PEFT's task wrappers (TRL's `get_peft_config` sets `"CAUSAL_LM"`) expect a causal LM with
      token logits and `prepare_inputs_for_generation`, while the adapter sits on the policy, a head over codes. The
      plain `PeftModel` wraps the latent model instead.
    - `target_modules` given as module names (TRL's `--lora_target_modules q_proj v_proj`) are scoped to the policy's
      modules of those names; a name no policy module has is an error naming `POLICY_LORA_TARGET_MODULES`. `None` and
      `"all-linear"` mean `POLICY_LORA_TARGET_MODULES`; a regex string is used as given (the trainer then checks that
      it reached the policy only).
    """
    import copy
    import re

    from peft.tuners.tuners_utils import check_target_module_exists

    config = copy.deepcopy(peft_config)
    if config.task_type is not None:
        logger.info(
            "LatentGRPOTrainer puts the %s adapter on the policy, which is not a causal LM: task_type %r is dropped.",
            type(config).__name__,
            config.task_type,
        )
        config.task_type = None
    if not hasattr(config, "target_modules"):  # not a LoRA-style adapter: PEFT and the trainer's checks decide
        return config
    targets = config.target_modules
    if targets is None or targets == "all-linear":
        config.target_modules = POLICY_LORA_TARGET_MODULES
    elif not isinstance(targets, str):
        names = sorted(targets)
        policy_modules = [f"policy.{name}" for name, _ in latent.policy.named_modules() if name]

        def in_policy(target: str) -> bool:  # PEFT's own matching rule, one target at a time
            probe = copy.copy(config)
            probe.target_modules = {target}
            return any(check_target_module_exists(probe, module) for module in policy_modules)

        missing = [t for t in names if not in_policy(t)]
        if missing:
            available = sorted({m.rsplit(".", 1)[-1] for m in policy_modules if m.endswith("_proj")})
            raise ValueError(
                f"LoRA target modules {missing} match no module of the policy, the only module latent-action RL "
                f"trains (its projections: {available}). Name some of those, or use "
                f"`LoraConfig(target_modules=POLICY_LORA_TARGET_MODULES)` ({POLICY_LORA_TARGET_MODULES!r})."
            )
        config.target_modules = r".*\bpolicy\.(?:.+\.)?(?:" + "|".join(re.escape(t) for t in names) + ")"
        logger.info("LoRA target modules %s are put on the policy's modules of those names only.", names)
    return config


def _not_latent_model_error(model) -> TypeError:
    name = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
    return TypeError(
        f"LatentGRPOTrainer needs a latent action model, got {name!r}. Build one around your base model with "
        "`from trl_latent import LatentActionModel; model = LatentActionModel.from_base('<base VLM path or id>')` "
        "(then learn its latent space with LatentSFTTrainer, stages 1-5), or pass the folder of a saved latent model "
        "(`model.save_pretrained(folder)`)."
    )


def _check_train_dataset(train_dataset) -> None:
    # A map-style dataset of length 0 would make `train()` finish after 0 steps without a word.
    if train_dataset is not None and hasattr(train_dataset, "__len__") and len(train_dataset) == 0:
        raise ValueError(
            "train_dataset is empty, so there is no prompt to roll out: check the dataset's path, split and filters."
        )


def _lora_layers(policy: torch.nn.Module):
    """The PEFT tuner layers inside the policy, by name (none without PEFT)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in policy.named_modules() if isinstance(m, BaseTunerLayer)]


def _check_mergeable_adapter(policy: torch.nn.Module) -> None:
    """TR-DPO with an adapter mixes the policy's merged weights (base + LoRA delta) into a policy-only reference: the
    adapter must be plain LoRA on linear layers, whose merged weight is `base + get_delta_weight`."""
    from peft.tuners.lora import Linear as LoraLinear

    unsupported = []
    for name, module in _lora_layers(policy):
        if not isinstance(module, LoraLinear) or any(module.use_dora.values()) or any(module.lora_bias.values()):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported:
        raise NotImplementedError(
            f"sync_ref_model=True with a PEFT adapter on the policy mixes the policy's merged weights into the "
            f"reference, which this trainer does for plain LoRA on linear layers only (no DoRA, no lora_bias); these "
            f"adapter layers are not: {unsupported[:4]}. Use a plain LoraConfig, or sync_ref_model=False."
        )


def _merged_policy_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's state dict as a plain policy (`DecoderStack`) holds it. With a LoRA adapter, each adapted weight
    is its base weight plus the adapter's delta, as merging would make it, computed without touching the policy."""
    state = policy.state_dict()
    layers = _lora_layers(policy)
    if not layers:
        return state
    merged = {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
    for name, module in layers:
        if module.merged or module.disable_adapters:  # merged: the base weight holds the delta already
            continue
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight = merged[f"{name}.weight"]
                merged[f"{name}.weight"] = weight + module.get_delta_weight(adapter).to(weight.dtype)
    return merged


class _SyncReferencePolicyCallback(TrainerCallback):
    """TR-DPO reference update (`sync_ref_model`): every `ref_model_sync_steps` steps, ref = α·policy + (1-α)·ref."""

    def __init__(self, trainer: LatentGRPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.ref_model_sync_steps == 0:
            self.trainer._sync_reference_policy(args.ref_model_mixup_alpha)


class LatentGRPOTrainer(LatentCheckpointMixin, LatentModelCardMixin, PolicyLossMixin, GRPOTrainer):
    r"""
    Trainer for reinforcement learning over latent actions (stage 6 of "Controlling Multimodal Conversational Agents
    with Coverage-Enhanced Latent Actions", Li et al., ACL 2026): the policy of a [`~trl_latent.LatentActionModel`]
    picks one of |C| codes per completion step and the frozen world model turns each (state, code) into the next text
    token. Only the policy learns.

    A drop-in for [`~trl.GRPOTrainer`]: same dataset format (`prompt` conversations with `image`/`images`), same reward
    functions (they see the decoded text), same launch with `accelerate` (DDP, DeepSpeed ZeRO-2/3). Differences:

    - log-probabilities, entropies, importance ratios and the KL are over the code distribution at each step;
    - the KL reference is a frozen copy of the policy modules only, made when training starts (with a PEFT adapter on
      the policy: the policy with the adapter disabled, or with `sync_ref_model` a copy with the adapter merged); no
      second base model is ever loaded;
    - with `reuse_rollout_states` (default) the update reuses the base states of the rollout and never runs the base;
    - the objective is a [`~trl_latent.training.losses.PolicyLoss`] (`args.loss`): GRPO, Dr.GRPO, DAPO, BNPO or your
      own subclass, the same classes the token-level baseline [`TokenGRPOTrainer`] uses.

    Logged besides TRL's metrics: `latent/code_entropy`, `latent/codes_used`, `latent/code_perplexity`, `latent/kl`
    (exact KL to the reference over the codes), `diversity/distinct_1`, `diversity/distinct_2` and, with
    `args.diversity_embedder`, `diversity/embedding`.

    Args:
        model (`str`, [`~trl_latent.LatentActionModel`] or [`~peft.PeftModel`]):
            A latent action model, the folder of a saved one (loaded with `args.model_init_kwargs`), or a PEFT model
            around one. A plain VLM is rejected with the recipe to build a latent model around it.
        reward_funcs, train_dataset, eval_dataset, reward_processing_classes, callbacks, optimizers:
            As for [`~trl.GRPOTrainer`].
        args ([`LatentGRPOConfig`], *optional*):
            Configuration; a default one when `None`.
        processing_class ([`~transformers.ProcessorMixin`] or [`~transformers.PreTrainedTokenizerBase`], *optional*):
            The base model's processor. When `None`, it is loaded from the latent model's base
            (`config.base_model_name_or_path`). A processor padding on the right is switched to left padding (with a
            warning): TRL pads prompts on the left and the multimodal positions must line up with them.
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantises the frozen base when `model` is a folder.
        peft_config ([`~peft.PeftConfig`], *optional*):
            An adapter for the policy, e.g. `LoraConfig(target_modules=POLICY_LORA_TARGET_MODULES)` or TRL's
            `get_peft_config(model_args)`: module names (`["q_proj", "v_proj"]`) are put on the policy's modules of
            those names, and `task_type` is dropped (see [`policy_peft_config`]). It must reach only policy modules
            (checked).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from PIL import Image
    >>> from trl_latent import LatentActionModel
    >>> from trl_latent.modeling.tiny import tiny_vlm, tiny_vlm_path
    >>> from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    >>> from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    >>> prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    >>> dataset = Dataset.from_list([{"prompt": prompt, "image": Image.new("RGB", (56, 56), c)} for c in ["red"] * 8])
    >>> path = tiny_vlm_path("tiny", corpus=["Colour?", "It is red."])
    >>> model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    >>> _, processor = tiny_vlm("tiny", corpus=["Colour?", "It is red."])
    >>> def reward_len(completions, **kwargs):
    ...     return [float(len(c[0]["content"])) for c in completions]
    >>> args = LatentGRPOConfig("out", per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
    ...                         max_steps=2, use_cpu=True, bf16=False, report_to="none", save_strategy="no")
    >>> trainer = LatentGRPOTrainer(model, reward_funcs=reward_len, args=args, train_dataset=dataset,
    ...                             processing_class=processor)
    >>> trainer.train().global_step
    2
    ```
    """

    _tag_names = ["trl", "grpo", "trl-latent", "latent-grpo"]
    _name = "Latent GRPO"

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: LatentGRPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
        rollout_func=None,
        environment_factory=None,
    ):
        if tools:
            raise NotImplementedError(
                "LatentGRPOTrainer does not support tool calling: the world model decodes one token per latent action "
                "and cannot splice tool results into a rollout. Train tool use with trl.GRPOTrainer."
            )
        if environment_factory is not None:
            raise NotImplementedError(
                "LatentGRPOTrainer does not support environments: rollouts are single-turn latent decoding. Put the "
                "environment's scoring in a reward function, or use trl.GRPOTrainer for multi-turn environments."
            )
        if rollout_func is not None:
            raise NotImplementedError(
                "LatentGRPOTrainer does not accept a rollout_func: its rollouts must return the sampled latent "
                "actions and base states, which only latent decoding produces. Customise sampling with "
                "LatentGRPOConfig's code_top_k / code_top_p / code_temperature / token_strategy."
            )
        if args is None:
            args = LatentGRPOConfig("latent-grpo")
        elif not isinstance(args, LatentGRPOConfig):
            raise TypeError(
                f"args must be a LatentGRPOConfig (got {type(args).__name__}): replace `GRPOConfig(...)` with "
                "`LatentGRPOConfig(...)`, which takes the same arguments plus the latent-action ones."
            )
        _check_train_dataset(train_dataset)
        model = self._load_latent_model(model, args, quantization_config)
        latent = model.get_base_model() if is_peft_model(model) else model
        check_prompt_dataset(train_dataset, takes_images=latent.backbone.is_vlm)  # names a bad row before any step
        processing_class = self._resolve_processor(processing_class, latent)
        if peft_config is not None:
            peft_config = policy_peft_config(peft_config, latent)
        uses_peft = peft_config is not None or is_peft_model(model)
        if not uses_peft:
            latent.set_trainable(["policy"])  # stage 6: the policy only (docs/architecture.md section 3)

        self.policy_loss = resolve_policy_loss(args.loss, args)  # sets args.beta to the loss's beta
        self.diversity_embedder = build_diversity_embedder(args.diversity_embedder)
        beta, sync_ref_model = args.beta, args.sync_ref_model
        if sync_ref_model and beta == 0.0:
            raise ValueError(
                "sync_ref_model=True needs a reference, but beta=0: set beta > 0 or sync_ref_model=False."
            )
        # Without PEFT, TRL would build its reference by reloading the whole model from `config._name_or_path`. The
        # reference here is a copy of the policy modules only (see `_reference_policy`), so TRL is told beta=0; with
        # PEFT, TRL's reference (adapter disabled, or a "ref" copy of a pretrained adapter) is already policy-only.
        # TR-DPO (`sync_ref_model`) is this trainer's own (`_SyncReferencePolicyCallback`), with PEFT too, where TRL
        # refuses it: TRL is told sync_ref_model=False.
        if not uses_peft:
            args.beta = 0.0
        args.sync_ref_model = False
        # The latent model was loaded above with `model_init_kwargs`: TRL, handed the instance, would warn that they
        # "will be ignored". It is told there are none.
        model_init_kwargs, args.model_init_kwargs = args.model_init_kwargs, None
        try:
            super().__init__(
                model,
                reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                reward_processing_classes=reward_processing_classes,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )
        finally:
            args.beta, args.sync_ref_model = beta, sync_ref_model
            args.model_init_kwargs = model_init_kwargs
        # TRL's rollout-time reference pass is off: `_compute_loss` runs the policy-only reference on the same states.
        self.beta = 0.0
        self._check_policy_loss_support()
        self._setup_reward_failure_stop(args.max_failed_reward_batches)
        self._check_only_policy_trains()
        self._reference_policy_copy = None
        self._rollout_output = None
        self._code_counts: dict[str, torch.Tensor] = {}  # per-code counts since the last log, by mode
        if sync_ref_model:
            if uses_peft:
                _check_mergeable_adapter(self._latent_model().policy)
            self.add_callback(_SyncReferencePolicyCallback(self))

    # -------------------------------------------------------------------------------------------------- set-up
    @staticmethod
    def _load_latent_model(model, args: LatentGRPOConfig, quantization_config):
        if isinstance(model, (str, os.PathLike)):
            config = AutoConfig.from_pretrained(model)
            if config.model_type != LatentActionModel.config_class.model_type:
                raise _not_latent_model_error(model)
            kwargs = dict(args.model_init_kwargs or {})
            if quantization_config is not None:
                kwargs["quantization_config"] = quantization_config
            model = LatentActionModel.from_pretrained(model, **kwargs)
        inner = model.get_base_model() if is_peft_model(model) else model
        if not isinstance(inner, LatentActionModel):
            raise _not_latent_model_error(inner)
        return model

    @staticmethod
    def _resolve_processor(processing_class, latent: LatentActionModel):
        if processing_class is None:
            source = latent.config.base_model_name_or_path
            if not source:
                raise ValueError(
                    "No processing_class was given and the latent model names no base model to load one from: pass "
                    "the base model's processor as `processing_class=`."
                )
            processing_class = AutoProcessor.from_pretrained(source, padding_side="left", truncation_side="left")
            if latent.backbone.is_vlm and not isinstance(processing_class, ProcessorMixin):
                # AutoProcessor silently falls back to a bare tokenizer for unknown processor classes (docs/architecture.md section 4).
                raise TypeError(
                    f"AutoProcessor loaded a {type(processing_class).__name__} from {source!r}, not the multimodal "
                    "processor a vision-language base needs: pass the processor explicitly as `processing_class=`."
                )
        tokenizer = processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
        if tokenizer.padding_side != "left":
            # TRL left-pads prompt ids itself but takes mm_token_type_ids from the processor's padded output: a right-
            # padding processor would shift every 3-D (mRoPE) position of the batch. Fix it rather than train on it.
            logger.warning(
                "The processor pads on the %r; LatentGRPOTrainer switches it to left padding (TRL pads prompts on the "
                "left, and multimodal positions must line up with them).",
                tokenizer.padding_side,
            )
            tokenizer.padding_side = "left"
        return processing_class

    def _latent_model(self) -> LatentActionModel:
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if is_peft_model(model) else model

    def _check_only_policy_trains(self) -> None:
        trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        outside = [name for name in trainable if ".policy." not in f".{name}"]
        if outside or not trainable:
            hint = (
                f" For LoRA on the policy use `LoraConfig(target_modules=POLICY_LORA_TARGET_MODULES)` "
                f"({POLICY_LORA_TARGET_MODULES!r})."
                if is_peft_model(self.model)
                else ""
            )
            what = f"these do too: {outside[:4]}" if outside else "nothing is trainable"
            raise ValueError(
                f"Latent-action RL trains the policy only (the base and the world model stay frozen), but {what}.{hint}"
            )

    def _model_card_training(self) -> CardTraining:
        """What the saved model's card says trained it: latent-action RL with this run's objective (its paper is
        cited) and rollout decoding settings (`trl_latent.training.model_card`)."""
        return rl_training(self.policy_loss, self.args)

    # -------------------------------------------------------------------------------------------------- reference
    def train(self, *args, **kwargs):
        # The reference is the policy as training starts (before a checkpoint is resumed, like TRL's reloaded one).
        if self._uses_reference():
            self._reference_policy()
        return super().train(*args, **kwargs)

    def _uses_reference(self) -> bool:
        return self.policy_loss.beta != 0.0 or self.args.log_reference_kl

    def _reference_policy(self) -> DecoderStack | None:
        """The frozen reference policy: a copy of the policy modules only (PEFT: `None`, the adapter is disabled;
        PEFT with `sync_ref_model`: a copy of the policy with its adapter merged, which TR-DPO then mixes into)."""
        if is_peft_model(self.accelerator.unwrap_model(self.model)) and not self.args.sync_ref_model:
            return None
        if self._reference_policy_copy is None:
            policy = self._latent_model().policy
            with self._gathered(policy):
                reference = DecoderStack(
                    policy.config,
                    len(policy.layers),
                    policy.head.out_features,
                    type(policy.layers[0]),
                    type(policy.norm),
                )
                reference.load_state_dict({k: v.detach().clone() for k, v in _merged_policy_state(policy).items()})
            reference.requires_grad_(False).eval()
            self._reference_policy_copy = reference.to(next(policy.parameters()).device)
        return self._reference_policy_copy

    @staticmethod
    def _gathered(module: torch.nn.Module):
        # Under DeepSpeed ZeRO-3 the policy's parameters are partitioned: gather them to read them whole.
        params = list(module.parameters())
        if any(hasattr(p, "ds_id") for p in params):
            import deepspeed

            return deepspeed.zero.GatheredParameters(params)
        return contextlib.nullcontext()

    def _checkpoints_reference(self) -> bool:
        # Only the TR-DPO reference moves during training; the fixed one is rebuilt from the initial policy.
        return self.args.sync_ref_model and self._reference_policy_copy is not None

    def _required_checkpoint_files(self) -> dict[str, str]:
        # A checkpoint without the moved reference cannot continue exactly (`resume_from_checkpoint=True` skips it).
        required = super()._required_checkpoint_files()
        if self._checkpoints_reference():
            required[REFERENCE_POLICY_FILE] = "TR-DPO reference policy (sync_ref_model=True)"
        return required

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._checkpoints_reference() and self.args.should_save:
            from safetensors.torch import save_file
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            state = {k: v.detach().contiguous().cpu() for k, v in self._reference_policy_copy.state_dict().items()}
            save_file(state, os.path.join(folder, REFERENCE_POLICY_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self._checkpoints_reference():
            return
        path = os.path.join(checkpoint, REFERENCE_POLICY_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint holds no TR-DPO reference policy (sync_ref_model=True), so the "
                "run cannot continue exactly. Resume from a checkpoint written with sync_ref_model=True, or start the "
                "run again."
            )
        from ..modeling.saving import load_safetensors

        reference = self._reference_policy_copy
        state = load_safetensors(path)
        reference.load_state_dict({k: v.to(reference.head.weight.device) for k, v in state.items()})

    @torch.no_grad()
    def _sync_reference_policy(self, alpha: float) -> None:
        reference = self._reference_policy()
        policy = self._latent_model().policy
        with self._gathered(policy):
            if is_peft_model(self.accelerator.unwrap_model(self.model)):
                # The policy's weights with the adapter merged (base weight + LoRA delta), mixed as a plain policy's.
                merged = _merged_policy_state(policy)
                pairs = [(ref_param, merged[name]) for name, ref_param in reference.named_parameters()]
            else:
                pairs = zip(reference.parameters(), policy.parameters(), strict=True)
            for ref_param, param in pairs:
                ref_param.mul_(1.0 - alpha).add_(param.detach().to(ref_param.dtype), alpha=alpha)

    @torch.no_grad()
    def _reference_logits(self, policy_out: LatentPolicyOutput) -> torch.Tensor:
        states = policy_out.states
        reference = self._reference_policy()
        latent = self._latent_model()
        view = latent.states_view(states, policy_out.attention_mask, policy_out.position_ids)
        if reference is None:  # PEFT on the policy: the reference is the policy without (or before) the adapter
            peft_model = self.accelerator.unwrap_model(self.model)
            with use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None):
                return latent.policy_logits(states, view)
        if reference.head.weight.dtype != states.dtype or reference.head.weight.device != states.device:
            reference.to(device=states.device, dtype=states.dtype)  # e.g. after DeepSpeed cast the model to bf16
        mask = latent._stack_mask(reference, states, policy_out.attention_mask)
        return reference(states, view.position_embeddings, mask)

    # -------------------------------------------------------------------------------------------------- rollouts
    @contextlib.contextmanager
    def _latent_decoding(self, latent: LatentActionModel):
        """Within the block, `latent.generate(**TRL's generate inputs)` runs latent decoding with this trainer's
        settings, keeps its full output in `self._rollout_output` and returns prompt + completion ids as TRL expects."""
        args = self.args

        def generate(
            input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None, **kwargs
        ):
            kwargs.pop("generation_config", None)
            if kwargs:
                raise NotImplementedError(
                    f"Latent decoding got inputs it does not handle: {sorted(kwargs)} (videos are not supported yet)."
                )
            out = latent_generate(
                latent,
                input_ids,
                attention_mask,
                pixel_values,
                image_grid_thw,
                mm_token_type_ids,
                max_new_tokens=self.max_completion_length,
                do_sample_codes=True,
                code_temperature=args.code_temperature,
                code_top_k=args.code_top_k or None,
                code_top_p=args.code_top_p,
                token_strategy=args.token_strategy,
                token_temperature=self.temperature,
                eos_token_id=self.eos_token_ids,
                pad_token_id=self._tokenizer.pad_token_id,
                return_states=args.reuse_rollout_states,
                cache_implementation=args.latent_cache_implementation,
                compile_step=args.compile_latent_step,
            )
            self._rollout_output = out
            return out.sequences

        latent.generate = generate
        try:
            yield
        finally:
            del latent.generate

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        with self._latent_decoding(self._latent_model()):
            completion_ids, _ = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        # The sampling log-probabilities of the codes (TRL's `sampling_per_token_logps`).
        code_logprobs = self._rollout_output.code_logprobs
        logprobs = [code_logprobs[i, : len(ids)].tolist() for i, ids in enumerate(completion_ids)]
        return completion_ids, logprobs

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        # While scoring a rollout, TRL asks for the *old* policy's log-probabilities when the update is not on-policy
        # (gradient_accumulation_steps not a multiple of steps_per_generation * num_iterations). The policy that just
        # sampled the codes is that old policy, so they are the rollout's own sampling log-probabilities.
        out = self._rollout_output
        if out is None or model is not self.model or compute_entropy or kwargs.get("compute_aux_loss"):
            raise RuntimeError(
                "LatentGRPOTrainer computes code log-probabilities in `_compute_loss`; TRL's token log-probability "
                "pass was reached outside rollout scoring, which this trainer does not support."
            )
        logps = (out.code_logprobs * out.completion_mask).to(input_ids.device)
        return _fit(logps, logits_to_keep), None, None

    def _generate_and_score_completions(self, inputs):
        self._rollout_output = None
        try:
            output = super()._generate_and_score_completions(inputs)
            out = self._rollout_output
        finally:
            self._rollout_output = None
        prompt_width, steps = output["prompt_ids"].size(1), output["completion_ids"].size(1)
        if out.sequences.size(1) - out.completion_ids.size(1) != prompt_width:
            raise RuntimeError(
                f"Latent decoding saw prompts of width {out.sequences.size(1) - out.completion_ids.size(1)} but TRL's "
                f"batch has width {prompt_width}: the codes and states would not line up with the tokens."
            )
        output[CODES_KEY] = _fit(out.codes, steps)
        if self.args.reuse_rollout_states:
            # States and positions of the P+T-1 positions the codes were chosen at, batch-first so TRL's shuffle and
            # split (which index dim 0) keep them with their rows: mRoPE positions (3, B, S) become (B, 3, S).
            # The states are in the dtype the policy already consumed them in during decoding (the base's compute
            # dtype), the one the update feeds it: no cast, no copy beyond `_fit`'s.
            output[STATES_KEY] = _fit(out.states, prompt_width + steps - 1)
            positions = out.position_ids.transpose(0, 1) if out.position_ids.dim() == 3 else out.position_ids
            output[POSITIONS_KEY] = _fit(positions, prompt_width + steps - 1, dim=-1)
        self._log_code_usage(output)
        return output

    def _log_code_usage(self, output) -> None:
        mode = "train" if self.model.training else "eval"
        mask = output["completion_mask"] * output["tool_mask"] if "tool_mask" in output else output["completion_mask"]
        codes = self.accelerator.gather(self.accelerator.pad_across_processes(output[CODES_KEY], dim=1))
        mask = self.accelerator.gather(self.accelerator.pad_across_processes(mask, dim=1))
        num_codes = self._latent_model().config.codebook_size
        counts = code_counts(codes, num_codes, mask)
        usage = usage_from_counts(counts)
        self._metrics[mode]["latent/codes_used"].append(usage["codebook/used"])
        self._metrics[mode]["latent/code_perplexity"].append(usage["codebook/perplexity"])
        # per-code counts since the last log, for the loggers that draw histograms (`log`)
        self._code_counts[mode] = self._code_counts.get(mode, torch.zeros(num_codes, dtype=torch.long)) + counts.cpu()
        if self.log_completions:
            # The codes beside each completion in TRL's completions table (printed and sent to wandb / trackio):
            # an "extra" column, in the order TRL gathered the prompts and completions of this batch.
            local_mask = output["completion_mask"].bool()
            rows = [" ".join(map(str, row[keep].tolist())) for row, keep in zip(output[CODES_KEY], local_mask)]
            self._logs["extra"][CODES_KEY].extend(gather_object(rows))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, then the per-code usage since the last log as a histogram, to each logger that draws one
        (TensorBoard's `add_histogram`, wandb's `Histogram`)."""
        counts = self._code_counts.pop("train" if self.model.training else "eval", None)
        super().log(logs, start_time)
        if counts is not None and self.accelerator.is_main_process:
            log_code_histogram(self.callback_handler.callbacks, counts, self.state.global_step)

    # -------------------------------------------------------------------------------------------------- update
    def _compute_loss(self, model, inputs):
        prompt_width, steps = inputs["prompt_ids"].size(1), inputs["completion_ids"].size(1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        if self.args.reuse_rollout_states:
            positions = inputs[POSITIONS_KEY]
            policy_inputs = dict(
                states=inputs[STATES_KEY],
                position_ids=positions.transpose(0, 1) if positions.dim() == 3 else positions,
                attention_mask=attention_mask[:, :-1],
            )
        else:
            policy_inputs = dict(
                input_ids=torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
                attention_mask=attention_mask,
                pixel_values=inputs.get("pixel_values"),
                image_grid_thw=inputs.get("image_grid_thw"),
                mm_token_type_ids=inputs.get("mm_token_type_ids"),
            )
        # Through the (DDP / DeepSpeed) wrapper, so gradients are synchronised; the base is not run with reuse.
        # Through the (DDP / DeepSpeed-wrapped) model's forward, so gradients are synchronised and ZeRO-3 gathers.
        policy_out = model(latent_fn=policy_pass, **policy_inputs)
        steps_slice = slice(prompt_width - 1, prompt_width - 1 + steps)  # position P-1+j chooses completion step j
        codes = inputs[CODES_KEY].unsqueeze(-1)
        logps_all = torch.log_softmax(policy_out.logits[:, steps_slice].float() / self.args.code_temperature, dim=-1)
        per_token_logps = logps_all.gather(-1, codes).squeeze(-1)
        with torch.no_grad():
            entropies = -(logps_all.exp() * logps_all).sum(-1)
        ref_logps_all = None
        if self._uses_reference():
            ref_logits = self._reference_logits(policy_out)[:, steps_slice]
            ref_logps_all = torch.log_softmax(ref_logits.float() / self.args.code_temperature, dim=-1)
        loss = self._compute_policy_loss(
            inputs,
            per_token_logps,
            entropies,
            ref_per_token_logps=(
                ref_logps_all.gather(-1, codes).squeeze(-1) if self.policy_loss.beta != 0.0 else None
            ),
        )
        self._log_step_metrics(inputs, logps_all.detach(), entropies, ref_logps_all)
        return loss

    def _log_step_metrics(self, inputs, logps_all, entropies, ref_logps_all) -> None:
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        mask = mask.float()

        def masked_mean(x):  # over the completion steps of all processes
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["latent/code_entropy"].append(masked_mean(entropies))
        if ref_logps_all is not None:
            # Exact KL(pi || pi_ref) over the |C| codes at each step (no sampling estimator needed for |C| = 128).
            kl = (logps_all.exp() * (logps_all - ref_logps_all)).sum(-1)
            self._metrics[mode]["latent/kl"].append(masked_mean(kl))
