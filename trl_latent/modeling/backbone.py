"""How a latent action model talks to its base model: one adapter per supported architecture family.

The adapter computes the base states `e` (last hidden state after the final norm), the position ids the new decoder
layers must share with the base (3-D mRoPE for Qwen2.5-VL and Qwen2-VL, computed from the image grid), and exposes
the pieces the latent model reuses (decoder-layer class, rotary embedding, final norm, `lm_head`).

Position ids are always computed here and passed explicitly, so the base's sticky `rope_deltas` state is never read
or written (docs/architecture.md section 4).
"""

from __future__ import annotations

import sys

import torch

VLM_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")
CAUSAL_LM_MODEL_TYPES = ("qwen2", "llama")
SUPPORTED_MODEL_TYPES = VLM_MODEL_TYPES + CAUSAL_LM_MODEL_TYPES


def check_supported(model_type: str) -> None:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise NotImplementedError(
            f"trl-latent does not support base models of type {model_type!r} yet. Supported: vision-language "
            f"{VLM_MODEL_TYPES} and text-only causal LMs {CAUSAL_LM_MODEL_TYPES}."
        )


def base_model_class(model_type: str):
    """The transformers class a base of this type is loaded with."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    check_supported(model_type)
    return AutoModelForImageTextToText if model_type in VLM_MODEL_TYPES else AutoModelForCausalLM


def is_peft_model(model) -> bool:
    """Whether `model` is a `peft.PeftModel`, without importing peft: a model cannot be one unless peft is loaded.
    (Importing peft imports bitsandbytes, which logs about optional kernels at import; see `trl_latent.cli`.)"""
    peft = sys.modules.get("peft")
    return peft is not None and hasattr(peft, "PeftModel") and isinstance(model, peft.PeftModel)


def _unwrap_peft(model):
    # A PEFT-wrapped base (world-model SFT with LoRA) keeps the transformers model under `.base_model.model`.
    return model.get_base_model() if is_peft_model(model) else model


class Backbone:
    """Adapter over a base model. Not an `nn.Module`: it holds no parameters, only a view on the base."""

    def __init__(self, base):
        self.base = base
        model = _unwrap_peft(base)
        self.model_type = model.config.model_type
        check_supported(self.model_type)
        self.is_vlm = self.model_type in VLM_MODEL_TYPES
        self.text_config = model.config.text_config if self.is_vlm else model.config
        self.inner = model.model  # Qwen2_5_VLModel / Qwen2VLModel / Qwen2Model / LlamaModel
        self.text_model = self.inner.language_model if self.is_vlm else self.inner
        self.lm_head = model.lm_head
        self.image_token_id = getattr(model.config, "image_token_id", None)
        self.video_token_id = getattr(model.config, "video_token_id", None)

    # -------------------------------------------------------------------------------------------- reused parts
    @property
    def final_norm(self):
        return self.text_model.norm

    @property
    def rotary_emb(self):
        return self.text_model.rotary_emb

    @property
    def decoder_layer_cls(self) -> type:
        return type(self.text_model.layers[0])

    @property
    def norm_cls(self) -> type:
        return type(self.text_model.norm)

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def max_positions(self) -> int:
        return self.text_config.max_position_embeddings

    # -------------------------------------------------------------------------------------------- positions
    def text_position_ids(self, attention_mask) -> torch.Tensor:
        """Plain 1-D positions of a left-padded batch, as text-only data has: (3, B, S) for the VL families (the
        same index on every mRoPE axis), (B, S) for causal LMs."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions.unsqueeze(0).expand(3, -1, -1) if self.is_vlm else positions

    def position_ids(
        self, input_ids, attention_mask, image_grid_thw=None, mm_token_type_ids=None, video_grid_thw=None
    ) -> torch.Tensor:
        """Position ids for a left-padded batch: (3, B, S) for the VL families, (B, S) for causal LMs."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if not self.is_vlm:
            return text_positions
        has_vision = image_grid_thw is not None or video_grid_thw is not None
        if not has_vision:
            if self.image_token_id is not None and bool((input_ids == self.image_token_id).any()):
                raise ValueError(
                    "The prompt holds image tokens but no `image_grid_thw` was given: pass the processor's full "
                    "output (pixel_values, image_grid_thw, mm_token_type_ids), not only input_ids."
                )
            return text_positions.unsqueeze(0).expand(3, -1, -1)
        if mm_token_type_ids is None:
            # Qwen2.5-VL silently builds wrong 3-D positions without mm_token_type_ids (docs/architecture.md section 4): rebuild
            # them from the token ids rather than guess.
            mm_token_type_ids = torch.zeros_like(input_ids, dtype=torch.int)
            mm_token_type_ids[input_ids == self.image_token_id] = 1
            if self.video_token_id is not None:
                mm_token_type_ids[input_ids == self.video_token_id] = 2
        position_ids, _ = self.inner.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            attention_mask=attention_mask,
        )
        return position_ids

    def next_position(self, position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per row, the position of the next text token: 1 + the largest position used so far. Shape (B,)."""
        pos = position_ids if position_ids.dim() == 2 else position_ids.max(dim=0).values
        pos = pos.masked_fill(attention_mask == 0, -1)
        return pos.max(dim=-1).values + 1

    def step_position_ids(self, next_pos: torch.Tensor) -> torch.Tensor:
        """Position ids for one new text token per row: (3, B, 1) or (B, 1)."""
        pos = next_pos.view(-1, 1)
        return pos.unsqueeze(0).expand(3, -1, -1) if self.is_vlm else pos

    def rotary(self, hidden: torch.Tensor, position_ids: torch.Tensor):
        return self.rotary_emb(hidden, position_ids)

    # -------------------------------------------------------------------------------------------- states
    def states(
        self,
        input_ids,
        attention_mask,
        position_ids,
        pixel_values=None,
        image_grid_thw=None,
        cache=None,
        pixel_values_videos=None,
        video_grid_thw=None,
    ) -> torch.Tensor:
        """The base's last hidden state after its final norm, e (B, S, d)."""
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        if self.is_vlm:
            kwargs.update(
                pixel_values=pixel_values,
                image_grid_thw=image_grid_thw,
                pixel_values_videos=pixel_values_videos,
                video_grid_thw=video_grid_thw,
            )
        elif pixel_values is not None:
            raise ValueError(f"A {self.model_type!r} base is text-only; it cannot take pixel_values.")
        out = self.inner(**kwargs)
        return out.last_hidden_state
