"""`LatentSFTConfig`: the configuration of [`LatentSFTTrainer`], the five stages that build the latent space."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from ..modeling.configuration import WORLD_OUTPUTS
from ..paper import WORLD_SFT_LAST_LAYERS
from .stages import (
    ABLATIONS,  # noqa: F401 (re-exported: it used to be defined here)
    DEFAULT_WORLD_OUTPUT_SCHEDULE,
    STAGE_NAMES,
    WORLD_OUTPUT_SCHEDULES,
    resolve_stage,
)

IDM_ENTROPY_FORMS = ("per_step", "batch_mean")
TEXT_STATE_POSITIONS = ("text", "multimodal")
BC_TARGETS = ("argmax", "soft")
# Which codes drive the world model in `world_sft`: the policy's argmax (the authors' code) or the IDM's.
WORLD_SFT_CODE_SOURCES = ("policy", "inverse")

# Per-stage defaults from the authors' code (docs/architecture.md section 3): lr 1e-4 for stages 1, 3, 4, 1e-3 for stage 2,
# 5e-5 and 3 epochs for stage 5, 1 epoch for every pre-training stage.
STAGE_LEARNING_RATES = {
    "inverse_warmup": 1e-4,
    "projector_warmup": 1e-3,
    "joint": 1e-4,
    "policy_bc": 1e-4,
    "world_sft": 5e-5,
}
STAGE_EPOCHS = {"inverse_warmup": 1.0, "projector_warmup": 1.0, "joint": 1.0, "policy_bc": 1.0, "world_sft": 3.0}


@dataclass
class LatentSFTConfig(SFTConfig):
    r"""
    Configuration class for the [`LatentSFTTrainer`]: one of the five supervised stages that build the latent action
    space (docs/architecture.md section 3; the stage table is `trl_latent.training.stages.STAGES`).

    [`LatentSFTConfig`] inherits every parameter of [`~trl.SFTConfig`]. Only the stage-specific ones are listed here.

    Parameters:
        > Parameters that choose the stage

        stage (`str`, *optional*, defaults to `"inverse_warmup"`):
            The stage to run: `"inverse_warmup"` (1: IDM, codebook and world-model merge on paired data),
            `"projector_warmup"` (2: the projector pair on paired data), `"joint"` (3: IDM and projectors on paired and
            text-only data, with the cycle loss), `"policy_bc"` (4: the policy clones the IDM's argmax codes) or
            `"world_sft"` (5: action-guided task SFT of the base with the policy's argmax codes).

        > Parameters that weight the loss terms

        entropy_weight (`float`, *optional*, defaults to `1e-3`):
            Weight of the IDM entropy bonus (stages 1 and 3); the loss subtracts `entropy_weight` times the entropy
            chosen by `idm_entropy`.
        idm_entropy (`str`, *optional*, defaults to `"per_step"`):
            `"per_step"`: the mean of the per-step entropies of the IDM's code distribution (the authors' code).
            `"batch_mean"`: the entropy of the code distribution averaged over the batch's steps (spreads the batch
            over codes while each step may still pick one with confidence).
        projector_weight (`float`, *optional*, defaults to `1e-5`):
            Weight of the projector's paired Gaussian NLLs in the `joint` stage (in `projector_warmup` they weigh 1).
        cycle_weight (`float`, *optional*, defaults to `1e-5`):
            Weight of the cycle loss `NLL(P'(mean P(e^T)); e^T)` on text-only data in the `joint` stage.

        > Ablation switches (each removes exactly its loss terms)

        use_cycle_loss (`bool`, *optional*, defaults to `True`):
            Whether the `joint` stage has the cycle loss (`projector/cycle`).
        use_projector (`bool`, *optional*, defaults to `True`):
            Whether text-only states go through the projector P. With `False`, text-only data feeds raw text states
            e^T to the IDM (joint) and the policy (policy_bc); the projector's loss terms and trainable modules are
            removed, and `projector_warmup` has nothing to train (skip it).
        use_text_only (`bool`, *optional*, defaults to `True`):
            Whether `joint` and `policy_bc` use the text-only stream. With `False`, every text-only term is removed and
            no `text_dataset` is needed.

        > Parameters of the world model

        world_output_schedule (`str`, *optional*, defaults to `"minus_base_then_merge_delta"`):
            Which world-model output form each stage trains under (`trl_latent.training.stages.WORLD_OUTPUT_SCHEDULES`).
            `"minus_base_then_merge_delta"` (default): the paper's and the authors' code, minus-base
            `lm_head(norm(x_K) - e)` in stages 1 and 3 (subtracting the base state makes the action path carry the
            information while the codebook is learned), merge-delta `lm_head(norm(Merge_K))` from stage 5 on. Or one form for every stage:
            `"merge_delta"`, `"base_plus_delta"`, `"residual_norm"`, `"residual"`, `"residual_minus_base"`, or
            `"merge_delta_then_base_plus_delta"`. The embedded experiment trains every stage under `"merge_delta"`:
            on its tiny general base that measured better after stages 1-5 than the authors' schedule
            (docs/findings.md); nothing shows that this holds for a real VLM. The stage writes its form into the model's
            config, so RL, evaluation and inference use the form the last stage trained under.
        world_output (`str`, *optional*):
            Overrides the schedule's form for this stage.

        > Parameters of behaviour cloning (`policy_bc`)

        bc_target (`str`, *optional*, defaults to `"argmax"`):
            `"argmax"` (default, the paper and the authors' code): the policy clones the IDM's argmax codes. `"soft"`:
            the policy matches the IDM's code distribution at `bc_temperature`, which leaves it more code entropy to
            explore in RL (the embedded experiment: 3.02 nats after stages 1-5 against 1.74 with argmax targets, but
            fewer right answers, docs/findings.md).
        bc_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the IDM distribution the policy matches with `bc_target="soft"`.
        bc_label_smoothing (`float`, *optional*, defaults to `0.0`):
            Label smoothing of the behaviour-cloning cross-entropy.
        bc_entropy_weight (`float`, *optional*, defaults to `0.0`):
            Weight of a policy entropy bonus (`policy/entropy`, raised) during behaviour cloning.
        world_sft_bc_weight (`float`, *optional*, defaults to `0.0`):
            Stage 5 only: with a weight above 0 the policy keeps cloning the IDM's codes (`policy/bc_task`, targets as
            `bc_target`) on the task dialogues while the base trains, so the policy that picks the codes learns the
            task too. 0 (default) leaves the policy frozen in stage 5, as the authors do.

        > Parameters of the projector stages

        text_state_positions (`str`, *optional*, defaults to `"text"`):
            Positions of the text-only run of a paired record (e^T): `"text"`, plain 1-D positions as real text-only
            data has (the authors' code); `"multimodal"`, the image run's 3-D mRoPE positions.

        > Parameters of the world-model SFT stage

        world_sft_codes (`str`, *optional*, defaults to `"policy"`):
            Which codes drive the world model in `world_sft`: the policy's argmax (`"policy"`, the authors' code: the
            base learns to answer with the codes greedy inference will pick) or the inverse dynamics model's argmax
            (`"inverse"`: the codes keep the meaning stages 1-3 gave them, so they keep steering the world model).
        world_sft_last_layers (`int`, *optional*, defaults to `8`):
            The `world_sft` trainable set is the vision tower, the last `world_sft_last_layers` language-model layers,
            the final norm and the embeddings. Pass a `peft.LoraConfig` as the trainer's `peft_config` to train a LoRA
            adapter on the base instead (then only the adapter trains).

        > Parameters of the data streams

        skip_bad_records (`bool`, *optional*, defaults to `False`):
            A paired record whose image is missing or unreadable (or any record with no text token left to train on)
            raises an error naming the record. With `True`, such records are dropped from their batch and counted
            (logged as `data/skipped_records`).

        > Speed

        cache_base_states (`bool`, *optional*, defaults to `True`):
            Where the base is frozen (stages 1-4), compute its final hidden states once per record and reuse them in
            later steps, epochs and health checks instead of re-running the base (`trl_latent.training.state_cache`;
            keyed by the record's token ids and, for a vision-language base, its image pixels). The losses are the
            same up to float rounding of a differently padded batch. `False` re-runs the base every step. Off under
            DeepSpeed ZeRO-3, where every process must run the same base passes.
        base_state_cache_bytes (`int`, *optional*, defaults to `1073741824`):
            Memory budget of the state cache (host memory, 1 GiB); the least recently used records are dropped beyond
            it.

        > Latent-space health

        health_samples (`int`, *optional*, defaults to `64`):
            At the end of the stage, the latent-space health metrics (`health/...`, docs/metrics.md) are measured on
            this many records of the trainer's `health_dataset` (default: the eval dataset, else the train dataset)
            and logged. `0` turns it off.
        health_logits_budget (`int`, *optional*, defaults to `134217728`):
            Cost cap of each part of the health check, in vocabulary logits (2**27; each a row of `lm_head`'s work).
            Its accuracies and code gains score 4 logit rows per answer position (base, IDM, policy and random code),
            its every-code sweep (`health/world_accuracy_best`, `health/controllability`, content controllability)
            |C| rows per position.
            A part that would exceed the budget runs at a seeded sample of `budget // (rows x vocabulary)` positions
            (`health/positions`, `health/sweep_positions` say how many). At 128 codes and a 49,152-token vocabulary:
            682 positions for the accuracies and 21 for the sweep, instead of every code at every position (minutes on
            a CPU); the embedded task's tiny vocabulary never reaches it. `0`: no cap (every position).

    > [!NOTE]
    > Defaults that differ from [`~trl.SFTConfig`]:
    > - `learning_rate` and `num_train_epochs`: the stage's (1e-4 for `inverse_warmup`, `joint` and `policy_bc`, 1e-3
    >   for `projector_warmup`, 5e-5 for `world_sft`; 1 epoch, 3 for `world_sft`), as in the authors' code.
    > - `gradient_checkpointing` off: the latent modules do not support it, and the base is frozen in stages 1-4.
    > - `remove_unused_columns=False` and `dataset_kwargs={"skip_prepare_dataset": True}`: the trainer's own collator
    >   reads both data streams.
    >
    > On a CPU, also pass `use_cpu=True` (or `bf16=False`) and `report_to="none"`.

    Example:

    ```python
    >>> from trl_latent.training.latent_sft_config import LatentSFTConfig
    >>> config = LatentSFTConfig(output_dir="out", stage="joint", use_cpu=True, report_to="none")
    >>> config.learning_rate, config.entropy_weight, config.cycle_weight
    (0.0001, 0.001, 1e-05)
    ```
    """

    # Parameters whose default values are overridden from SFTConfig
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "The initial learning rate for AdamW. Defaults to the stage's: 1e-4 (inverse_warmup, joint, "
            "policy_bc), 1e-3 (projector_warmup), 5e-5 (world_sft)."
        },
    )
    num_train_epochs: float | None = field(
        default=None,
        metadata={"help": "Number of training epochs. Defaults to the stage's: 1, or 3 for world_sft."},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of `activation_checkpointing`; not supported by the latent modules."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must stay False: the trainer's collator reads the record columns itself."},
    )
    dataset_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Always `{'skip_prepare_dataset': True}`: the trainer's collator tokenises on the fly."},
    )

    # Stage
    stage: str = field(
        default="inverse_warmup",
        metadata={"help": "The stage to run.", "choices": list(STAGE_NAMES)},
    )

    # Loss weights
    entropy_weight: float = field(
        default=1e-3,
        metadata={"help": "Weight of the IDM entropy bonus (stages inverse_warmup and joint); the sign raises it."},
    )
    projector_weight: float = field(
        default=1e-5,
        metadata={"help": "Weight of the projector's paired Gaussian NLLs in the joint stage."},
    )
    cycle_weight: float = field(
        default=1e-5,
        metadata={"help": "Weight of the cycle loss on text-only data in the joint stage."},
    )

    # Ablation switches
    use_cycle_loss: bool = field(
        default=True,
        metadata={"help": "Whether the joint stage has the cycle loss on text-only data."},
    )
    use_projector: bool = field(
        default=True,
        metadata={"help": "Whether text-only states go through the projector P (False: raw text states e^T)."},
    )
    use_text_only: bool = field(
        default=True,
        metadata={"help": "Whether the joint and policy_bc stages use the text-only data stream."},
    )

    idm_entropy: str = field(
        default="per_step",
        metadata={
            "help": "IDM entropy bonus: mean of per-step entropies (authors) or entropy of the batch-mean distribution.",
            "choices": list(IDM_ENTROPY_FORMS),
        },
    )

    # World model
    world_output_schedule: str = field(
        default=DEFAULT_WORLD_OUTPUT_SCHEDULE,
        metadata={
            "help": "World-model output form per stage: 'authors' (default: minus-base in stages 1-4, merge-delta "
            "from 5, as the paper's code) or one form for every stage (e.g. merge_delta).",
            "choices": list(WORLD_OUTPUT_SCHEDULES),
        },
    )
    world_output: str | None = field(
        default=None,
        metadata={
            "help": "Override the schedule's world-model output form for this stage.",
            "choices": list(WORLD_OUTPUTS),
        },
    )

    # Behaviour cloning
    bc_target: str = field(
        default="argmax",
        metadata={"help": "Clone the IDM's argmax codes or its soft code distribution.", "choices": list(BC_TARGETS)},
    )
    bc_temperature: float = field(
        default=1.0, metadata={"help": "Temperature of the IDM distribution cloned with bc_target='soft'."}
    )
    bc_label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the behaviour-cloning CE."})
    bc_entropy_weight: float = field(
        default=0.0, metadata={"help": "Weight of the policy entropy bonus during behaviour cloning."}
    )
    world_sft_bc_weight: float = field(
        default=0.0,
        metadata={
            "help": "world_sft: weight of behaviour cloning of the IDM's codes on the task dialogues (the policy then "
            "trains with the base); 0 keeps the policy frozen (authors)."
        },
    )

    # Projector stages
    text_state_positions: str = field(
        default="text",
        metadata={
            "help": "Positions of a paired record's text-only run: plain 1-D text positions (authors) or the image "
            "run's 3-D mRoPE positions.",
            "choices": list(TEXT_STATE_POSITIONS),
        },
    )

    # World-model SFT
    world_sft_codes: str = field(
        default="policy",
        metadata={
            "help": "Codes that drive the world model in world_sft: the policy's argmax (authors) or the IDM's.",
            "choices": list(WORLD_SFT_CODE_SOURCES),
        },
    )
    world_sft_last_layers: int = field(
        default=WORLD_SFT_LAST_LAYERS,
        metadata={
            "help": "world_sft trains the vision tower, this many last LM layers, the final norm and the embeddings "
            "(unless a LoRA `peft_config` is given to the trainer)."
        },
    )

    # Data
    skip_bad_records: bool = field(
        default=False,
        metadata={
            "help": "Drop and count records with a missing or unreadable image or no text token to train on, instead "
            "of raising an error naming the record."
        },
    )

    # Latent-space health
    health_samples: int = field(
        default=64,
        metadata={"help": "Records the latent-space health metrics are measured on at the end of the stage (0: off)."},
    )

    cache_base_states: bool = field(
        default=True,
        metadata={
            "help": "Reuse a frozen base's states per record across steps and epochs instead of re-running the base "
            "(stages 1-4)."
        },
    )
    base_state_cache_bytes: int = field(
        default=2**30, metadata={"help": "Memory budget (bytes, host memory) of the frozen-base state cache."}
    )
    health_logits_budget: int = field(
        default=2**27,
        metadata={
            "help": "Cost cap (vocabulary logits) of each part of the health check (accuracies, every-code sweep): "
            "above it, the part runs at a seeded sample of answer positions that fits (0: no cap)."
        },
    )

    def __post_init__(self):
        if self.stage not in STAGE_NAMES:
            raise ValueError(f"Unknown stage {self.stage!r}; choose one of {STAGE_NAMES}.")
        for name, value, choices in (
            ("world_output_schedule", self.world_output_schedule, tuple(WORLD_OUTPUT_SCHEDULES)),
            ("world_output", self.world_output, (None, *WORLD_OUTPUTS)),
            ("idm_entropy", self.idm_entropy, IDM_ENTROPY_FORMS),
            ("bc_target", self.bc_target, BC_TARGETS),
            ("text_state_positions", self.text_state_positions, TEXT_STATE_POSITIONS),
            ("world_sft_codes", self.world_sft_codes, WORLD_SFT_CODE_SOURCES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices} (got {value!r}).")
        if self.bc_temperature <= 0:
            raise ValueError(f"bc_temperature must be positive (got {self.bc_temperature}).")
        if not 0.0 <= self.bc_label_smoothing < 1.0:
            raise ValueError(f"bc_label_smoothing must be in [0, 1) (got {self.bc_label_smoothing}).")
        if self.health_samples < 0:
            raise ValueError(f"health_samples must be >= 0 (got {self.health_samples}).")
        if self.base_state_cache_bytes <= 0:
            raise ValueError(f"base_state_cache_bytes must be positive (got {self.base_state_cache_bytes}).")
        if self.health_logits_budget < 0:
            raise ValueError(f"health_logits_budget must be >= 0 (got {self.health_logits_budget}).")
        if self.learning_rate is None:
            self.learning_rate = STAGE_LEARNING_RATES[self.stage]
        if self.num_train_epochs is None:
            self.num_train_epochs = STAGE_EPOCHS[self.stage]
        for name in ("entropy_weight", "projector_weight", "cycle_weight", "bc_entropy_weight", "world_sft_bc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)}); a loss weight cannot be negative.")
        if self.world_sft_last_layers < 0:
            raise ValueError(f"world_sft_last_layers must be >= 0 (got {self.world_sft_last_layers}).")
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would drop the columns LatentSFTTrainer's collator reads; leave it False."
            )
        if self.packing or self.padding_free:
            raise ValueError(
                "packing and padding_free are not supported by LatentSFTTrainer: the latent modules read padded "
                "batches with an attention mask. Set packing=False and padding_free=False."
            )
        super().__post_init__()  # also parses a `dataset_kwargs` JSON string given on the command line
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        if self.activation_checkpointing:
            raise ValueError(
                "activation (gradient) checkpointing is not supported by LatentSFTTrainer: the latent modules do not "
                "implement it. Leave gradient_checkpointing / activation_checkpointing unset or False."
            )
        resolve_stage(self)  # fails early, with a clear message, on a stage the switches leave empty
