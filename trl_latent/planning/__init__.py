"""`trl-latent plan`: parameter counts and per-GPU memory of a training stage, computed on the `meta` device.

The latent action model is built on the `meta` device from a config alone (no weights are read or downloaded), so the
real Qwen2.5-VL-3B/7B shapes held in `trl_latent.modeling.tiny` plan offline. The trainable set is the one the
trainers train: the stage table (`trl_latent.training.stages`) applied with `LatentActionModel.set_trainable`, with
`base_tail_prefixes` for the world-model SFT stage and the policy alone for RL.

Accounting (bytes per parameter; Psi = all parameters, Psi_t = trainable ones, N = GPUs), the ZeRO paper's
mixed-precision AdamW (Rajbhandari et al., 2020):

```
precision "bf16": weights 2 Psi (bf16), gradients 2 Psi_t (bf16), optimizer 12 Psi_t (fp32 master + 2 fp32 moments)
precision "fp32": weights 4 Psi,        gradients 4 Psi_t,        optimizer  8 Psi_t (2 fp32 moments)

DDP            : weights, gradients and optimizer states whole on every GPU
ZeRO-2         : weights whole; gradients and optimizer states / N
ZeRO-3         : weights, gradients, optimizer states / N, plus the largest module gathered whole (working set)
ZeRO-3 offload : parameters and optimizer states on the CPU (/ N per process); the GPU holds the gathered working set
ZeRO (all)     : the gradients also count DeepSpeed's reduce bucket (`DEEPSPEED_REDUCE_BUCKET` values) and the whole
                 gradient of the largest trainable module, which exists before it is reduced to its partition
```

RL adds a frozen copy of the policy (the KL reference) whole on every GPU. Activations are an estimate of what
autograd keeps for backward (see `activation_terms`), with SDPA attention and no recomputation.
"""

from .counting import PlanError, build_meta_model, count_modules, load_model_config, resolve_plan_stage
from .memory import GIB, PRECISIONS, STRATEGIES, activation_terms, layer_values, strategy_memory
from .plan import Plan, format_plan, make_plan

__all__ = [
    "GIB",
    "PRECISIONS",
    "STRATEGIES",
    "Plan",
    "PlanError",
    "activation_terms",
    "build_meta_model",
    "count_modules",
    "format_plan",
    "layer_values",
    "load_model_config",
    "make_plan",
    "resolve_plan_stage",
    "strategy_memory",
]
