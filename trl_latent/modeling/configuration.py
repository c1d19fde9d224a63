"""`LatentActionConfig`: the configuration of a latent action model (docs/architecture.md section 2)."""

from __future__ import annotations

from transformers import PretrainedConfig

from ..paper import CODEBOOK_SIZE, INVERSE_LAYERS, POLICY_LAYERS

# How the world model turns merged states x_K (x_0 = e, x_{k+1} = x_k + Merge_k(x_k, c)) into next-token logits.
# docs/model.md "World-model output" compares them on the embedded task.
WORLD_OUTPUTS = (
    "residual_minus_base",  # lm_head(norm(x_K) - e): the authors' form for stages 1-4
    "merge_delta",  # lm_head(norm(Merge_K(x_{K-1}, c))): the authors' form for stage 5, RL and inference
    "residual_norm",  # lm_head(norm(x_K)): the final norm applied again to the merged state
    "residual",  # lm_head(x_K): with zero-initialised merges, exactly the base's own prediction at the start
    "base_plus_delta",  # lm_head(e + norm(Merge_K(x_{K-1}, c))): the base's logits plus a full-strength code expert
)
# How the merge blocks' output projections start: "normal" (std 0.02, as every new linear layer here), or "zeros", so
# that x_K = e at initialisation and the `residual` form starts from exactly the base's prediction (as a LoRA adapter
# starts from B = 0); the codes then add only what they learn to add.
WORLD_MERGE_INITS = ("normal", "zeros")


class LatentActionConfig(PretrainedConfig):
    r"""
    Configuration of a [`LatentActionModel`]: a base (vision-)language model plus a codebook of latent actions, an
    inverse dynamics model, a world-model merge, a policy and a cross-modal projector pair.

    Parameters:
        base_model_name_or_path (`str`, *optional*):
            Folder or hub id of the base model. Saved checkpoints reload the base from here unless the base weights
            were saved with the checkpoint (after the world-model SFT stage changed them).
        base_config (`dict`, *optional*):
            The base model's own configuration (`config.to_dict()`). Filled in from the base when the model is built,
            so a saved latent model can be rebuilt (e.g. on the `meta` device) without the base weights.
        codebook_size (`int`, *optional*, defaults to `128`):
            Number of latent actions |C|.
        inverse_layers (`int`, *optional*, defaults to `4`):
            Decoder layers of the inverse dynamics model.
        policy_layers (`int`, *optional*, defaults to `8`):
            Decoder layers of the policy.
        merge_blocks (`int`, *optional*, defaults to `2`):
            Residual SwiGLU blocks of the world-model merge.
        merge_intermediate_size (`int`, *optional*):
            Hidden size of the merge blocks; defaults to the base text model's intermediate size.
        gumbel_temperature (`float`, *optional*, defaults to `2.0`):
            Temperature of the Gumbel-softmax the inverse dynamics model samples codes with during training.
        projector_hidden_ratio (`float`, *optional*, defaults to `0.5`):
            Hidden width of the projectors as a fraction of the base hidden size (d -> d/2 -> d).
        projector_logvar_bound (`float`, *optional*, defaults to `1.0`):
            The projectors' log-variance is `bound * tanh(.)`, so it stays in `[-bound, bound]` (the authors' code: 1).
        projector_shared_trunk (`bool`, *optional*, defaults to `False`):
            Whether each projector's mean and log-variance heads share their first layer. `False` (the authors'
            code): two separate MLPs.
        world_output (`str`, *optional*, defaults to `"merge_delta"`):
            How the world model turns merged states into logits: `"residual_minus_base"`, `lm_head(norm(x_K) - e_t)`
            (the authors' form while the codebook is learned); `"merge_delta"`, `lm_head(norm(Merge_K(x_{K-1}, c)))`
            (the authors' form for task SFT, RL and inference); `"residual_norm"`, `lm_head(norm(x_K))`;
            `"residual"`, `lm_head(x_K)`; `"base_plus_delta"`, `lm_head(e_t + norm(Merge_K))`. It is a property of the training stage (the stage table and
            `LatentSFTConfig.world_output_schedule` set it); a saved model carries the form its last stage trained
            under, so RL, evaluation and inference use that form.
        world_delta_scale (`float`, *optional*, defaults to `1.0`):
            With `world_output="base_plus_delta"`, `h = e_t + world_delta_scale * norm(Merge_K)`: how strongly the code
            expert speaks against the base's own logits.
        world_merge_init (`str`, *optional*, defaults to `"normal"`):
            How the merge blocks' output projections are initialised when the model is built: `"normal"` (std 0.02, as
            every other new layer) or `"zeros"`, so that `x_K = e_t` at the start and the `"residual"` form predicts
            exactly what the base does (the base states are taken after its final norm), the codes adding only what
            they learn to add (as a LoRA adapter starts at zero). A reloaded model keeps its trained weights either way.
        base_weights_saved (`bool`, *optional*, defaults to `False`):
            Set when a checkpoint holds the base weights too (the base was fine-tuned).
    """

    model_type = "latent_action"

    base_model_name_or_path: str | None = None
    base_config: dict | None = None
    codebook_size: int = CODEBOOK_SIZE
    inverse_layers: int = INVERSE_LAYERS
    policy_layers: int = POLICY_LAYERS
    merge_blocks: int = 2
    merge_intermediate_size: int | None = None
    gumbel_temperature: float = 2.0
    projector_hidden_ratio: float = 0.5
    projector_logvar_bound: float = 1.0
    projector_shared_trunk: bool = False
    world_output: str = "merge_delta"
    world_delta_scale: float = 1.0
    world_merge_init: str = "normal"
    base_weights_saved: bool = False

    def __post_init__(self, **kwargs):
        if self.codebook_size < 2:
            raise ValueError(
                f"codebook_size must be at least 2 (got {self.codebook_size}): one code is no choice at all."
            )
        for name in ("inverse_layers", "policy_layers", "merge_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)}).")
        if self.world_output not in WORLD_OUTPUTS:
            raise ValueError(f"world_output must be one of {WORLD_OUTPUTS} (got {self.world_output!r}).")
        if self.world_merge_init not in WORLD_MERGE_INITS:
            raise ValueError(f"world_merge_init must be one of {WORLD_MERGE_INITS} (got {self.world_merge_init!r}).")
        if not 0 < self.projector_hidden_ratio <= 4:
            raise ValueError(f"projector_hidden_ratio must be in (0, 4] (got {self.projector_hidden_ratio}).")
        if self.projector_logvar_bound <= 0:
            raise ValueError(f"projector_logvar_bound must be positive (got {self.projector_logvar_bound}).")
        if self.world_delta_scale <= 0:
            raise ValueError(f"world_delta_scale must be positive (got {self.world_delta_scale}).")
        if self.gumbel_temperature <= 0:
            raise ValueError(f"gumbel_temperature must be positive (got {self.gumbel_temperature}).")
        # TRL reloads `config._name_or_path` to build a reference model; an empty auto_map keeps loading on our
        # registered classes instead of remote code (docs/architecture.md section 4).
        kwargs.setdefault("auto_map", {})
        super().__post_init__(**kwargs)
