"""`LatentActionModel`: a base (vision-)language model wrapped with latent actions (docs/architecture.md section 2).

```
e_t            = B(x_V, x_<=t)                         base states, after the final norm (frozen by default)
IDM logits     : step t is read at position t+1        (it has seen token t+1: inverse dynamics)
policy logits  : pi(a_t | e_<=t)                       (causal: only the past)
world logits   : lm_head(h),  x_0 = e_t, x_{k+1} = x_k + Merge_k(x_k, C[a_t]),  h by `config.world_output`:
                 norm(x_K) - e_t (minus-base) | norm(Merge_K) (merge-delta) | norm(x_K) | x_K
projectors     : P(e^T) ~ N(mean, exp(logvar)) ~ e^{V,T},  P'(e^{V,T}) ~ e^T
```

Every new module reads `e` detached unless the caller asks for gradient through the base (world-model SFT).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import save_on_cpu
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.masking_utils import create_causal_mask
from transformers.utils import ModelOutput

from .backbone import Backbone, base_model_class, check_supported, is_peft_model
from .configuration import WORLD_OUTPUTS, LatentActionConfig
from .modules import (
    Codebook,
    DecoderStack,
    GaussianOutput,
    GaussianProjector,
    WorldModelMerge,
    gumbel_straight_through,
)
from .saving import (
    check_weight_files,
    load_folder_state,
    load_safetensors,
    read_saved_config,
    saved_base_path,
    to_model_keys,
)

logger = logging.getLogger(__name__)

# Module groups, by the paper's names. Stages pick their trainable set from these.
MODULE_GROUPS = ("codebook", "inverse_dynamics", "world_merge", "policy", "projector", "inverse_projector")


@dataclass
class BaseStates(ModelOutput):
    """What one base pass yields, reused by every head in the same call.

    `states` (B, S, d) are e^{V,T} (with pixels when given); `text_states` are e^T, the same ids run without pixels
    (only when asked for). `position_ids` and `position_embeddings` are shared with the new decoder layers.
    """

    states: torch.Tensor | None = None
    text_states: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    position_embeddings: tuple | None = None
    text_mask: torch.Tensor | None = None


@dataclass
class LatentActionOutput(ModelOutput):
    loss: torch.Tensor | None = None
    world_logits: torch.Tensor | None = None
    policy_logits: torch.Tensor | None = None
    inverse_logits: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    states: BaseStates | None = None


class LatentActionPreTrainedModel(PreTrainedModel):
    config_class = LatentActionConfig
    base_model_prefix = "latent"
    # The policy's layers only (`LatentActionModel.activation_checkpointing_enable`).
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = []

    def _init_weights(self, module):
        # The base keeps its own (pretrained) weights; only our new modules are initialised here.
        std = 0.02
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()


class LatentActionModel(LatentActionPreTrainedModel):
    r"""
    A latent action model: a base VLM (or causal LM) plus a codebook of latent actions, an inverse dynamics model,
    a world-model merge, a policy, and a projector pair.

    Build one from a base model with [`LatentActionModel.from_base`]; reload a saved one with `from_pretrained`.

    ```python
    >>> from trl_latent import LatentActionModel
    >>> from trl_latent.modeling.tiny import tiny_vlm_path
    >>> path = tiny_vlm_path("tiny", corpus=["What do you see?", "A red square."])
    >>> model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    >>> model.config.codebook_size
    16
    ```
    """

    def __init__(self, config: LatentActionConfig, base_model: PreTrainedModel | None = None):
        super().__init__(config)
        if base_model is None:
            if config.base_config is None:
                raise ValueError(
                    "LatentActionModel needs a base model: pass `base_model=`, use `LatentActionModel.from_base(path)`,"
                    " or give a config with `base_config`."
                )
            base_config = AutoConfig.for_model(**config.base_config)
            base_model = base_model_class(base_config.model_type).from_config(base_config)
        elif config.base_config is None:
            config.base_config = base_model.config.to_dict()
        check_supported(base_model.config.model_type)
        self.base = base_model
        backbone = Backbone(base_model)
        d = backbone.hidden_size
        n_codes = config.codebook_size
        text_config = backbone.text_config
        self.codebook = Codebook(n_codes, d)
        self.inverse_dynamics = DecoderStack(
            text_config, config.inverse_layers, n_codes, backbone.decoder_layer_cls, backbone.norm_cls
        )
        self.policy = DecoderStack(
            text_config, config.policy_layers, n_codes, backbone.decoder_layer_cls, backbone.norm_cls
        )
        intermediate = config.merge_intermediate_size or text_config.intermediate_size
        self.world_merge = WorldModelMerge(d, intermediate, config.merge_blocks)
        hidden = max(1, int(round(d * config.projector_hidden_ratio)))
        bound, shared = config.projector_logvar_bound, config.projector_shared_trunk
        self.projector = GaussianProjector(d, hidden, bound, shared)
        self.inverse_projector = GaussianProjector(d, hidden, bound, shared)
        self.post_init()
        if config.world_merge_init == "zeros":  # the merges add nothing until they learn to (weights reloaded after)
            for block in self.world_merge.blocks:
                nn.init.zeros_(block.down_proj.weight)
        # `post_init` may re-run `_init_weights` on the base; the base keeps the weights it came with because
        # transformers marks loaded parameters as initialised.
        self.freeze_base()
        self._match_partitioned_base_dtype()
        # TRL reads pad/EOS ids from `model.generation_config` and, with a multimodal processor, the image token id
        # from `model.config`; the latent model decodes with its base's.
        self.generation_config = copy.deepcopy(getattr(base_model, "generation_config", None))
        if backbone.is_vlm:
            config.image_token_id = backbone.image_token_id
        # `Trainer.train` aligns `model.config`'s special-token ids with the tokenizer's, with a warning whenever one
        # is unset or differs: the latent model's are its base's (a saved latent model keeps its own).
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(config, name, None) is None and getattr(text_config, name, None) is not None:
                setattr(config, name, getattr(text_config, name))

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_base(cls, base, processor=None, quantization_config=None, dtype=None, **config_kwargs):
        """Wrap a base model (a loaded `PreTrainedModel`, or a folder / hub id to load it from) with fresh latent
        modules. `quantization_config` (a `BitsAndBytesConfig`) loads the frozen base in 4 or 8 bits; the new modules
        stay in full precision."""
        if isinstance(base, (str, os.PathLike)):
            path = str(base)
            base_config = AutoConfig.from_pretrained(path)
            check_supported(base_config.model_type)
            load_kwargs = {}
            if dtype is not None:
                load_kwargs["dtype"] = dtype
            if quantization_config is not None:
                load_kwargs["quantization_config"] = quantization_config
            base = base_model_class(base_config.model_type).from_pretrained(path, **load_kwargs)
        else:
            check_supported(base.config.model_type)
            path = base.config._name_or_path or None
        config = LatentActionConfig(base_model_name_or_path=path, base_config=base.config.to_dict(), **config_kwargs)
        model = cls(config, base_model=base)
        if quantization_config is not None:
            model._keep_new_modules_full_precision()
        return model

    def _match_partitioned_base_dtype(self) -> None:
        """Under DeepSpeed ZeRO-3 with `zero.Init` (the config created before the model), the base arrives partitioned
        in DeepSpeed's dtype (bf16 under `bf16: enabled`), and DeepSpeed then casts nothing: it takes a model with
        partitioned parameters to be in its dtype already. The new modules, built here in the default dtype, would
        stay fp32 beside a bf16 base and the first world-model matmul fails ("expected m1 and m2 to have the same
        dtype"). They take the base's dtype, as DeepSpeed would have cast them; its bf16 optimizer keeps fp32 master
        weights of whatever trains."""
        dtypes = {p.dtype for p in self.base.parameters() if hasattr(p, "ds_id") and p.is_floating_point()}
        if len(dtypes) == 1:
            dtype = dtypes.pop()
            for name in MODULE_GROUPS:
                getattr(self, name).to(dtype)

    def _keep_new_modules_full_precision(self) -> None:
        for name in MODULE_GROUPS:
            getattr(self, name).float()

    @property
    def backbone(self) -> Backbone:
        return Backbone(self.base)

    # ------------------------------------------------------------------------------------------------ freezing
    def freeze_base(self) -> None:
        for p in self.base.parameters():
            p.requires_grad_(False)

    def set_trainable(self, groups, base_modules=None) -> None:
        """Freeze everything, then unfreeze the named module groups (see `MODULE_GROUPS`) and, optionally, base
        parameters whose names start with one of `base_modules` (e.g. `"model.language_model.layers.3."`)."""
        unknown = set(groups) - set(MODULE_GROUPS)
        if unknown:
            raise ValueError(f"Unknown module groups {sorted(unknown)}; choose from {MODULE_GROUPS}.")
        for p in self.parameters():
            p.requires_grad_(False)
        for name in groups:
            for p in getattr(self, name).parameters():
                p.requires_grad_(True)
        if base_modules:
            prefixes = tuple(base_modules)
            hit = False
            for name, p in self.base.named_parameters():
                if name.startswith(prefixes):
                    p.requires_grad_(True)
                    hit = True
            if not hit:
                raise ValueError(f"No base parameter name starts with any of {list(prefixes)}.")
            self.mark_base_modified()

    def mark_base_modified(self) -> None:
        """Record that the base's weights are being changed, so `save_pretrained` saves them too."""
        self.config.base_weights_saved = True

    def base_tail_prefixes(self, num_layers: int = 8) -> list[str]:
        """Parameter-name prefixes of the world-model SFT trainable set (docs/architecture.md section 3, stage 5): the vision
        tower, the last `num_layers` LM layers, the final norm and the embeddings."""
        backbone = self.backbone
        names = dict(self.base.named_modules())
        inv = {id(m): n for n, m in names.items()}
        layers = backbone.text_model.layers
        n = len(layers)
        prefixes = [inv[id(layers[i])] + "." for i in range(max(0, n - num_layers), n)]
        prefixes.append(inv[id(backbone.final_norm)] + ".")
        prefixes.append(inv[id(backbone.text_model.embed_tokens)] + ".")
        if backbone.is_vlm:
            prefixes.append(inv[id(backbone.inner.visual)] + ".")
        return prefixes

    # ------------------------------------------------------------------------------------------ checkpointing
    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs=None, every_n_layers: int = 1, offload: bool = False
    ):
        """Activation (gradient) checkpointing of the **policy's decoder layers** only: during a training forward with
        gradients each layer keeps its input and recomputes its activations in backward (one extra forward of the
        policy layers per update, far less activation memory). The base and the other new modules are untouched: in
        latent RL no gradient flows through the base (the update reuses its states or runs it without gradient).

        What `Trainer` calls for `gradient_checkpointing=True` / `activation_checkpointing=True`, with
        `gradient_checkpointing_kwargs`: `every_n_layers` and `offload` (saved layer inputs in host memory) as in
        transformers, the other keys go to `torch.utils.checkpoint.checkpoint` (default `use_reentrant=False`).
        """
        kwargs = dict(activation_checkpointing_kwargs or {})
        # TRL re-enables with the raw `gradient_checkpointing_kwargs` (`disable_gradient_checkpointing`): read the
        # transformers-only keys from them too.
        every_n_layers = kwargs.pop("every_n_layers", every_n_layers)
        offload = kwargs.pop("offload", offload)
        kwargs.setdefault("use_reentrant", False)
        checkpoint_fn = functools.partial(checkpoint, **kwargs)
        device_type = self.policy.head.weight.device.type
        if offload and device_type != "cpu":

            def checkpoint_fn(function, *args, _checkpoint=checkpoint_fn, **kw):
                with save_on_cpu(pin_memory=True, device_type=device_type):
                    return _checkpoint(function, *args, **kw)

        self.policy.set_activation_checkpointing(
            checkpoint_fn, every_n_layers, reentrant=bool(kwargs["use_reentrant"])
        )

    def activation_checkpointing_disable(self):
        self.policy.set_activation_checkpointing(None)

    # transformers' deprecated aliases, which TRL 1.16 still calls (without transformers' deprecation warning).
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self):
        self.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    def enable_input_require_grads(self):
        """A no-op: transformers and PEFT hook the input embeddings so checkpointed base layers pass gradients on; the
        base is never checkpointed here, and the policy makes its own input require grad when reentrant
        checkpointing needs it (`DecoderStack.set_activation_checkpointing`)."""

    def disable_input_require_grads(self):
        """A no-op (see `enable_input_require_grads`)."""

    # ------------------------------------------------------------------------------------------------ base pass
    def _stack_mask(self, stack: DecoderStack, hidden, attention_mask, cache=None):
        return create_causal_mask(
            config=stack.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=cache
        )

    def encode(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        *,
        with_pixels: bool = True,
        with_text_states: bool = False,
        grad_through_base: bool = False,
        cache=None,
        text_positions: str = "text",
        states: torch.Tensor | None = None,
        text_states: torch.Tensor | None = None,
        **unused,
    ) -> BaseStates:
        """One base pass (two when `with_text_states`): states e^{V,T} and, for the same ids without pixels, e^T.

        The two runs share ids, so they are aligned position by position; `text_mask` marks text tokens (not padding,
        not image tokens) where losses apply. The text-only run uses plain 1-D positions, as real text-only data
        has (`text_positions="text"`, the authors' code), or the image run's 3-D positions (`"multimodal"`).
        `cache` (a transformers `Cache`) is filled by the pixel run, for decoding. `states` / `text_states`: the runs'
        states computed before (a frozen base's, e.g. from a state cache); a run given here does not run the base.
        """
        given_states, given_text_states = states, text_states
        backbone = self.backbone
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if input_ids.shape[1] > backbone.max_positions:
            raise ValueError(
                f"The input has {input_ids.shape[1]} tokens but the base model handles at most "
                f"{backbone.max_positions}; truncate the prompt (without cutting image tokens)."
            )
        if pixel_values is not None and backbone.is_vlm:
            n_image_tokens = int((input_ids == backbone.image_token_id).sum())
            if n_image_tokens == 0:
                raise ValueError(
                    "pixel_values were given but the ids hold no image tokens: build the prompt with the processor's "
                    "chat template so each image gets its <|image_pad|> tokens."
                )
        position_ids = backbone.position_ids(input_ids, attention_mask, image_grid_thw, mm_token_type_ids)
        ctx = torch.enable_grad() if grad_through_base else torch.no_grad()
        with ctx:
            states = None
            if with_pixels:
                states = given_states
                if states is None:
                    states = backbone.states(
                        input_ids, attention_mask, position_ids, pixel_values, image_grid_thw, cache=cache
                    )
            text_states = None
            if with_text_states or not with_pixels:
                if text_positions not in ("text", "multimodal"):
                    raise ValueError(f"text_positions must be 'text' or 'multimodal' (got {text_positions!r}).")
                text_states = given_text_states
                if text_states is None:
                    text_position_ids = position_ids
                    if text_positions == "text" and with_pixels:
                        text_position_ids = backbone.text_position_ids(attention_mask)
                    text_states = backbone.states(input_ids, attention_mask, text_position_ids, None, None)
        if not grad_through_base:
            states = states.detach() if states is not None else None
            text_states = text_states.detach() if text_states is not None else None
        ref = states if states is not None else text_states
        position_embeddings = backbone.rotary(ref, position_ids)
        text_mask = attention_mask.bool()
        if backbone.image_token_id is not None:
            text_mask = text_mask & (input_ids != backbone.image_token_id)
        if backbone.video_token_id is not None:
            text_mask = text_mask & (input_ids != backbone.video_token_id)
        return BaseStates(
            states=states,
            text_states=text_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
            text_mask=text_mask,
        )

    # ------------------------------------------------------------------------------------------------ heads
    def states_view(self, states: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
        """Wrap states computed earlier (e.g. during a rollout) so the heads can run on them without the base."""
        return BaseStates(
            states=states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            position_embeddings=self.backbone.rotary(states, position_ids),
        )

    def inverse_logits(self, e: torch.Tensor, base: BaseStates) -> torch.Tensor:
        """Inverse dynamics logits for the transition e_t -> x_{t+1}, aligned to step t: (B, S, |C|).

        The IDM runs causally over e; its output at position t+1 (which has seen token t+1) labels step t. The last
        step has no future and gets the last position's logits (its loss is masked by the callers)."""
        mask = self._stack_mask(self.inverse_dynamics, e, base.attention_mask)
        raw = self.inverse_dynamics(e, base.position_embeddings, mask)
        return torch.cat([raw[:, 1:], raw[:, -1:]], dim=1)

    def policy_logits(self, e: torch.Tensor, base: BaseStates, cache=None) -> torch.Tensor:
        """Policy logits pi(a_t | e_<=t): (B, S, |C|)."""
        mask = self._stack_mask(self.policy, e, base.attention_mask, cache)
        return self.policy(e, base.position_embeddings, mask, cache=cache)

    def world_logits(self, e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Next-token logits of the world model from states e (B, S, d) and codes: indices (B, S) or (relaxed)
        one-hots (B, S, |C|) (straight-through one-hots carry the gradient to the IDM)."""
        c = self.codebook(codes).to(e.dtype)
        backbone = self.backbone
        x, delta = self.world_merge(e, c)
        hidden = world_hidden(
            self.config.world_output, e, x, delta, backbone.final_norm, self.config.world_delta_scale
        )
        return backbone.lm_head(hidden.to(backbone.lm_head.weight.dtype)).float()

    def sample_inverse_codes(self, inverse_logits: torch.Tensor, hard: bool | None = None) -> torch.Tensor:
        """Training: Gumbel-softmax (tau = config.gumbel_temperature) with a straight-through one-hot. Labelling
        (`hard=True` or eval mode): the plain argmax as a one-hot."""
        if hard is None:
            hard = not self.training
        if hard:
            return F.one_hot(inverse_logits.argmax(-1), self.config.codebook_size).to(inverse_logits.dtype)
        return gumbel_straight_through(inverse_logits, self.config.gumbel_temperature)

    def project(self, text_states: torch.Tensor) -> GaussianOutput:
        """P: text-only state e^T -> pseudo image+text state (diagonal Gaussian)."""
        return self.projector(text_states)

    def inverse_project(self, states: torch.Tensor) -> GaussianOutput:
        """P': image+text state e^{V,T} -> text-only state (diagonal Gaussian)."""
        return self.inverse_projector(states)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        codes: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        code_source: str = "inverse",
        return_policy_logits: bool = False,
        latent_fn=None,
        **kwargs,
    ) -> LatentActionOutput:
        """A convenience pass: world logits for `codes` (given, or the IDM's (`code_source="inverse"`) or the
        policy's argmax (`"policy"`)); with `labels`, the world-model cross-entropy (next-token, -100 ignored).

        `latent_fn`: a callable `fn(model, **kwargs)` run *inside* `forward` and returned as is. Trainers route their
        stage losses and policy passes through it, so DDP and DeepSpeed wrappers see a forward call (DDP only
        synchronises gradients of a forward it ran; ZeRO-3 gathers parameters around it)."""
        if latent_fn is not None:
            named = dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
                mm_token_type_ids=mm_token_type_ids,
                codes=codes,
                labels=labels,
            )
            return latent_fn(self, **{k: v for k, v in named.items() if v is not None}, **kwargs)
        if input_ids is None:
            raise ValueError("LatentActionModel.forward needs input_ids (or a latent_fn).")
        base = self.encode(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids)
        e = base.states
        inverse_logits = policy_logits = None
        if codes is None:
            if code_source == "inverse":
                inverse_logits = self.inverse_logits(e, base)
                codes = self.sample_inverse_codes(inverse_logits)
            elif code_source == "policy":
                policy_logits = self.policy_logits(e, base)
                codes = policy_logits.argmax(-1)
            else:
                raise ValueError(f"code_source must be 'inverse' or 'policy' (got {code_source!r}).")
        if return_policy_logits and policy_logits is None:
            policy_logits = self.policy_logits(e, base)
        logits = self.world_logits(e, codes)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        hard_codes = codes if codes.dim() == 2 else codes.argmax(-1)
        return LatentActionOutput(
            loss=loss,
            world_logits=logits,
            policy_logits=policy_logits,
            inverse_logits=inverse_logits,
            codes=hard_codes,
            states=base,
        )

    # ------------------------------------------------------------------------------------------------ decoding
    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """Latent decoding; see `trl_latent.modeling.generation.latent_generate`."""
        from .generation import latent_generate

        return latent_generate(self, *args, **kwargs)

    # ------------------------------------------------------------------------------------------------ save / load
    def new_module_state_dict(self) -> dict[str, torch.Tensor]:
        return _without_base(self.state_dict())

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Save the new modules and a reference to the base. Base weights are written only once the base was
        changed (`config.base_weights_saved`), so a frozen multi-GB base is never duplicated."""
        if is_peft_model(self.base):
            # A LoRA-adapted base: save the adapter beside the new modules; the base itself stays where it is.
            self.base.save_pretrained(Path(save_directory) / "base_adapter")
            state_dict = self.new_module_state_dict() if state_dict is None else _without_base(state_dict)
        elif not self.config.base_weights_saved:
            # A given state dict (e.g. gathered under ZeRO-3 by the Trainer) is filtered the same way.
            state_dict = self.new_module_state_dict() if state_dict is None else _without_base(state_dict)
        return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, base_model=None, quantization_config=None, **kw):
        """Reload a saved latent model. Without base weights in the folder, the base comes from `base_model` (a
        loaded model) or from `config.base_model_name_or_path` (optionally quantised). The weights load whichever key
        layout transformers wrote them in (see [`to_model_keys`]).

        A folder that holds a PEFT adapter of the policy (what `LatentGRPOTrainer` saves when it trained one) loads the
        latent model the adapter names (`base_model_name_or_path` of its `adapter_config.json`) and merges the adapter
        into the policy, as transformers loads an adapter folder of a causal LM. The model remembers the folder it came
        from (`name_or_path`), so an adapter trained on it records where to reload from."""
        path = Path(pretrained_model_name_or_path)
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            return cls._from_adapter_folder(
                path, *args, base_model=base_model, quantization_config=quantization_config, **kw
            )
        model = cls._load(path, *args, base_model=base_model, quantization_config=quantization_config, **kw)
        model.config._name_or_path = model.name_or_path = str(path)
        return model

    @classmethod
    def _from_adapter_folder(cls, path: Path, *args, **kw):
        from peft import PeftConfig, PeftModel

        start = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        if not start:
            raise ValueError(
                f"{path} holds a PEFT adapter whose adapter_config.json names no latent model to load it onto "
                "(base_model_name_or_path is empty; runs that started from a model built in memory write none). Load "
                "the latent model the run started from, then `PeftModel.from_pretrained(model, folder)`."
            )
        latent = cls.from_pretrained(start, *args, **kw)
        model = PeftModel.from_pretrained(latent, str(path)).merge_and_unload()
        model.config._name_or_path = model.name_or_path = str(path)
        return model

    @classmethod
    def _load(cls, path: Path, *args, base_model=None, quantization_config=None, **kw):
        config = kw.pop("config", None) or read_saved_config(path)
        if path.is_dir():
            check_weight_files(path)
        if config.base_weights_saved and base_model is None and quantization_config is None:
            return super().from_pretrained(path, *args, config=config, **kw)
        dtype = kw.pop("dtype", None) or kw.pop("torch_dtype", None)
        if isinstance(dtype, str) and dtype != "auto":  # as TRL's `model_init_kwargs` and `--dtype` give it
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'.")
            dtype = getattr(torch, dtype)
        if base_model is None:
            base_path = saved_base_path(path, config)
            base_cls = base_model_class(config.base_config["model_type"])
            base_kwargs = {"dtype": dtype} if dtype is not None else {}
            if quantization_config is not None:
                base_kwargs["quantization_config"] = quantization_config
            base_model = base_cls.from_pretrained(base_path, **base_kwargs)
        model = cls(config, base_model=base_model)
        adapter = path / "base_adapter"
        if adapter.exists():
            from peft import PeftModel

            # Wrapped after `cls(...)`: its `post_init` would re-initialise the adapter's (unmarked) Linear layers.
            model.base = PeftModel.from_pretrained(model.base, adapter)
        model.load_saved_weights(path)
        if quantization_config is not None:
            model._keep_new_modules_full_precision()
        elif dtype is not None and dtype != "auto":  # "auto": the base keeps its saved dtype, the new modules theirs
            model.to(dtype)
        model.eval()
        return model

    def load_saved_weights(self, folder) -> None:
        """Load the weights of a saved model or a Trainer checkpoint folder into this model, in place.

        The saved keys are mapped to this model's with transformers' own conversion mapping for the base (a Qwen2.5-VL
        base may be saved as `base.model.layers.*` / `base.visual.*` and is `base.model.language_model.*` /
        `base.model.visual.*` in memory). Every new module must be in the folder; the base is either absent (it was
        not changed, the model keeps its own) or complete. Anything else raises, naming the folder and the keys.
        A LoRA adapter of the base saved beside the weights (`base_adapter/`) is restored too.
        """
        folder = Path(folder)
        state = to_model_keys(self, load_folder_state(folder), folder)
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        missing = [k for k in own if k not in state]
        missing_new = [k for k in missing if not k.startswith("base.")]
        missing_base = [k for k in missing if k.startswith("base.")]
        if missing_base and any(k.startswith("base.") for k in state):
            # A saved base must be complete, up to weights tied to a saved one (e.g. lm_head and the embeddings).
            saved_storage = {own[k].data_ptr() for k in state if k in own}
            missing_base = [k for k in missing_base if own[k].data_ptr() not in saved_storage]
        else:
            missing_base = []
        if missing_new or missing_base or unexpected:
            raise ValueError(
                f"The weights in {folder} do not match this latent model: missing {(missing_new + missing_base)[:5]}"
                f"{' ...' if len(missing_new + missing_base) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{' ...' if len(unexpected) > 5 else ''}. Load the folder into a model built with the same "
                "LatentActionConfig and base (e.g. `LatentActionModel.from_pretrained(folder)`)."
            )
        self.load_state_dict(state, strict=False)
        if is_peft_model(self.base):
            from peft import set_peft_model_state_dict

            adapter = folder / "base_adapter" / "adapter_model.safetensors"
            if not adapter.is_file():
                raise FileNotFoundError(
                    f"{adapter} is missing: {folder} holds no LoRA adapter of the base to restore. Resume from a "
                    "checkpoint written by the same LoRA run, or build the model without `peft_config`."
                )
            set_peft_model_state_dict(self.base, load_safetensors(adapter))


def world_hidden(
    form: str, e: torch.Tensor, x: torch.Tensor, delta: torch.Tensor, norm: nn.Module, delta_scale: float = 1.0
) -> torch.Tensor:
    """The hidden state the world model feeds `lm_head`, for one of `WORLD_OUTPUTS` (docs/architecture.md section 2)."""
    if form == "residual_minus_base":
        return norm(x) - e
    if form == "merge_delta":
        return norm(delta)
    if form == "residual_norm":
        return norm(x)
    if form == "residual":
        return x
    if form == "base_plus_delta":
        # lm_head is linear: the base's own logits plus those of the merge's (normalised) output, a product of two
        # experts in which the code expert has the base's strength and the base keeps its direct path to lm_head.
        return e + delta_scale * norm(delta)
    raise ValueError(f"Unknown world_output {form!r}; choose one of {WORLD_OUTPUTS}.")


def _without_base(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items() if not k.startswith("base.")}


AutoConfig.register("latent_action", LatentActionConfig)
AutoModel.register(LatentActionConfig, LatentActionModel)
