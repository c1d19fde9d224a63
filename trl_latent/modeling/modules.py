"""The new modules of a latent action model, as small composable PyTorch modules (docs/architecture.md section 2).

Each module reads base-model states `e` (batch, seq, d) and is testable on random tensors, without TRL and without a
checkpoint. Decoder stacks are built from the base model's own decoder-layer class, so they take the same rotary
position embeddings (3-D mRoPE for Qwen2.5-VL) as the base.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------------------- helpers
def gumbel_straight_through(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Gumbel-softmax sample with a straight-through hard one-hot: the forward value is a one-hot, the gradient is
    the relaxed sample's (Jang et al., 2017)."""
    return F.gumbel_softmax(logits.float(), tau=temperature, hard=True).to(logits.dtype)


def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position diagonal Gaussian NLL without constants: `sum_d[(mean - y)^2 exp(-logvar) + logvar]`."""
    return ((mean - target).pow(2) * torch.exp(-logvar) + logvar).sum(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ------------------------------------------------------------------------------------------------------ codebook
class Codebook(nn.Module):
    """|C| latent actions of dimension d: a bias-free linear map applied to a one-hot (or relaxed one-hot)."""

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.num_codes = num_codes
        self.proj = nn.Linear(num_codes, dim, bias=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """`codes` are integer indices (...,) or (relaxed) one-hots (..., |C|); returns code vectors (..., d)."""
        if codes.dtype in (torch.long, torch.int, torch.int32, torch.int64):
            return F.embedding(codes, self.proj.weight.t())
        return self.proj(codes.to(self.proj.weight.dtype))


# ---------------------------------------------------------------------------------------------------- decoder stack
class DecoderStack(nn.Module):
    """N decoder layers of the base model's own class, a final RMSNorm and a linear head to `out_dim` logits.

    Used for the inverse dynamics model (d -> |C| at every position) and the policy (d -> |C|).
    """

    def __init__(self, text_config, num_layers: int, out_dim: int, layer_cls: type, norm_cls: type):
        super().__init__()
        config = copy.deepcopy(text_config)
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = ["full_attention"] * num_layers
        config.use_sliding_window = False
        self.config = config
        self.layers = nn.ModuleList([layer_cls(config, layer_idx=i) for i in range(num_layers)])
        self.norm = norm_cls(config.hidden_size, eps=config.rms_norm_eps)
        self.head = nn.Linear(config.hidden_size, out_dim, bias=False)

    # Set by `set_activation_checkpointing`: reentrant checkpointing needs an input that requires grad.
    _reentrant_checkpointing = False

    def set_activation_checkpointing(self, checkpoint_fn=None, every_n_layers: int = 1, reentrant: bool = False):
        """Checkpoint every `every_n_layers`-th layer (the first, then every n-th) with `checkpoint_fn` (a
        `torch.utils.checkpoint.checkpoint` partial) whenever the stack runs in training mode with gradients enabled:
        the layer keeps only its input for backward and recomputes its activations there. `None` turns it off.

        The layers are the base's decoder-layer class, transformers' `GradientCheckpointingLayer`, which skip
        checkpointing without gradients (decoding, reference passes), so KV caches are unaffected.
        `reentrant=True` (`use_reentrant=True`) needs an input that requires grad to produce parameter gradients;
        the stack's input (base states) never does, so `forward` then hands the first layer a grad-requiring alias.
        """
        from transformers.modeling_layers import GradientCheckpointingLayer

        if every_n_layers < 1:
            raise ValueError(f"every_n_layers must be >= 1 (got {every_n_layers}).")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, GradientCheckpointingLayer):
                raise ValueError(
                    f"{type(layer).__name__} is not a transformers GradientCheckpointingLayer: its stack cannot be "
                    "activation-checkpointed."
                )
            layer.gradient_checkpointing = checkpoint_fn is not None and i % every_n_layers == 0
            if checkpoint_fn is not None:
                layer._gradient_checkpointing_func = checkpoint_fn
        self._reentrant_checkpointing = checkpoint_fn is not None and reentrant

    def forward(self, hidden: torch.Tensor, position_embeddings, attention_mask=None, cache=None, position_ids=None):
        """`attention_mask` is a prepared mask (from `transformers.masking_utils.create_causal_mask`)."""
        if self._reentrant_checkpointing and self.training and torch.is_grad_enabled() and not hidden.requires_grad:
            hidden = hidden.detach().requires_grad_()  # an alias of the same storage, no copy
        for layer in self.layers:
            hidden = layer(
                hidden,
                attention_mask=attention_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
            )
        return self.head(self.norm(hidden))


# ------------------------------------------------------------------------------------------------------ world model
class MergeBlock(nn.Module):
    """A SwiGLU block on concat[x, c]: 2d -> intermediate -> d."""

    def __init__(self, dim: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(2 * dim, intermediate, bias=False)
        self.up_proj = nn.Linear(2 * dim, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, dim, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, c], dim=-1)
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class WorldModelMerge(nn.Module):
    """K residual merge blocks: `x_0 = e`, `x_{k+1} = x_k + Merge_k(x_k, c)`. Returns the final state and the last
    block's output (the delta), so both world-output forms can be built from one pass."""

    def __init__(self, dim: int, intermediate: int, num_blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList([MergeBlock(dim, intermediate) for _ in range(num_blocks)])

    def forward(self, e: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, delta = e, None
        for block in self.blocks:
            delta = block(x, c)
            x = x + delta
        return x, delta


# ----------------------------------------------------------------------------------------------------- projectors
@dataclass
class GaussianOutput:
    mean: torch.Tensor
    logvar: torch.Tensor


class GaussianProjector(nn.Module):
    """A per-position diagonal Gaussian d -> d: a mean MLP and a log-variance MLP (each d -> hidden -> d with tanh),
    the log-variance bounded to `[-logvar_bound, logvar_bound]` by a tanh (the authors' code: bound 1).

    The projector P maps a text-only state e^T to a pseudo image+text state; the inverse projector P' maps back.
    `shared_trunk=True` shares the first layer between the two heads (a cheaper variant).
    """

    def __init__(self, dim: int, hidden: int, logvar_bound: float = 1.0, shared_trunk: bool = False):
        super().__init__()
        self.shared_trunk = shared_trunk
        self.logvar_bound = logvar_bound
        if shared_trunk:
            self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
            self.mean_head = nn.Linear(hidden, dim)
            self.logvar_head = nn.Linear(hidden, dim)
        else:
            self.mean_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
            self.logvar_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> GaussianOutput:
        if self.shared_trunk:
            h = self.trunk(x)
            mean, raw_logvar = self.mean_head(h), self.logvar_head(h)
        else:
            mean, raw_logvar = self.mean_mlp(x), self.logvar_mlp(x)
        return GaussianOutput(mean, self.logvar_bound * torch.tanh(raw_logvar))
