"""Latent decoding: the policy picks a code per step, the frozen world model turns (state, code) into the next token.

One step (docs/architecture.md section 2): `e_t = B(x_V, x_<=t)`; `a_t ~ pi(. | e_<=t)`; `x_{t+1} = argmax lm_head(...)`.
Both the base and the policy keep a KV cache, so a step costs one base forward of one token plus the policy layers.
The caches are dynamic (grown per step) or static (pre-allocated, fixed shapes); with static caches the step
(`decode_step`) can be compiled, with CUDA graphs on CUDA (docs/latent_grpo.md, "Decoding paths").
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache
from transformers.masking_utils import create_causal_mask
from transformers.utils import ModelOutput

from ..paper import ROLLOUT_CODE_TEMPERATURE, ROLLOUT_CODE_TOP_K, TOKEN_STRATEGY

TOKEN_STRATEGIES = ("greedy", "sample")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")
# Rollout defaults of `latent_generate` and `LatentGRPOConfig` beside the paper's (`trl_latent.paper`): no nucleus
# filter of the codes, and KV caches that grow by one position per step.
ROLLOUT_CODE_TOP_P = 1.0
DEFAULT_CACHE_IMPLEMENTATION = "dynamic"


@dataclass
class LatentGenerateOutput(ModelOutput):
    """`sequences` = prompt + completion ids (B, P+T); `completion_ids`/`completion_mask` (B, T), pad after EOS;
    `codes` (B, T) the latent action chosen before each completion token; `code_logprobs` (B, T) their log-probs under
    the temperature-scaled policy distribution (before top-k/top-p filtering, as TRL scores tokens); `states`
    (B, P+T-1, d) the base states the codes were chosen from, `position_ids` of the whole sequence and the matching
    `attention_mask` (B, P+T), so a trainer can recompute policy logits without running the base again."""

    sequences: torch.LongTensor | None = None
    completion_ids: torch.LongTensor | None = None
    completion_mask: torch.Tensor | None = None
    codes: torch.LongTensor | None = None
    code_logprobs: torch.Tensor | None = None
    states: torch.Tensor | None = None
    position_ids: torch.LongTensor | None = None
    attention_mask: torch.Tensor | None = None


def filter_code_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering of (..., |C|) logits; filtered entries become -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set whose mass reaches top_p
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def exponential_noise(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exp(1) noise for `sample_categorical`, drawn eagerly (from `generator`, else the device's global generator) so
    that a compiled decoding step receives its randomness as an input and every decoding path draws alike."""
    noise = torch.empty(shape, dtype=torch.float32, device=device).exponential_(generator=generator)
    return noise.clamp_min_(torch.finfo(torch.float32).tiny)  # never 0: 0 / 0 would be NaN, which argmax picks


def sample_categorical(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One draw per row from the categorical distributions `probs` (..., K): the exponential race `argmax p_i / E_i`
    with `E_i ~ Exp(1)` (`noise` from `exponential_noise`). Zero-probability entries are never drawn."""
    return (probs.float() / noise).argmax(-1)


def choose_codes(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick codes from policy logits (B, |C|); returns (codes, log-probs under softmax(logits / temperature)).
    Sampling uses `noise` (B, |C|) when given, else draws it from `generator`."""
    scaled = logits.float() / max(temperature, 1e-6)
    if do_sample:
        if noise is None:
            noise = exponential_noise(scaled.shape, scaled.device, generator)
        codes = sample_categorical(filter_code_logits(scaled, top_k, top_p).softmax(-1), noise)
    else:
        codes = scaled.argmax(-1)
    logprobs = torch.log_softmax(scaled, -1).gather(-1, codes[:, None]).squeeze(-1)
    return codes, logprobs


def left_align(input_ids, attention_mask, *others):
    """Move right padding to the left (latent decoding appends tokens at the right edge of every row)."""
    if attention_mask is None or bool(attention_mask[:, -1].all()):
        return (input_ids, attention_mask, *others)
    width = attention_mask.shape[1]
    idx = torch.arange(width, device=attention_mask.device)
    # Sort key: padding (key < 1) before tokens (key >= 2), each kept in its original order.
    order = torch.argsort(attention_mask.long() * 2 + idx / width, dim=-1)
    gather = lambda t: t if t is None else torch.gather(t, 1, order)  # noqa: E731
    return (gather(input_ids), gather(attention_mask), *[gather(o) for o in others])


@dataclass
class _StepOptions:
    """The Python-level settings of one decoding step (constants for a compiled step: a change recompiles it)."""

    do_sample_codes: bool
    code_temperature: float
    code_top_k: int | None
    code_top_p: float | None
    token_strategy: str
    token_temperature: float
    pad_token_id: int


def _choose(model, e_last, policy_logits, finished, eos, suppress, code_noise, token_noise, forced, opts):
    """Code choice and world-model token for the states `e_last` (B, 1, d): returns (codes, code log-probs, tokens,
    finished). Rows already finished emit the pad token."""
    if forced is not None:
        codes = forced
        logps = torch.log_softmax(policy_logits.float() / max(opts.code_temperature, 1e-6), -1)
        logps = logps.gather(-1, codes[:, None]).squeeze(-1)
    else:
        codes, logps = choose_codes(
            policy_logits,
            do_sample=opts.do_sample_codes,
            temperature=opts.code_temperature,
            top_k=opts.code_top_k,
            top_p=opts.code_top_p,
            noise=code_noise,
        )
    token_logits = model.world_logits(e_last, codes[:, None])[:, -1]  # (B, V) float32: the step's largest tensor
    token_logits.index_fill_(-1, suppress, float("-inf"))
    if opts.token_strategy == "greedy":
        token = token_logits.argmax(-1)
    else:
        token = sample_categorical((token_logits / max(opts.token_temperature, 1e-6)).softmax(-1), token_noise)
    token = torch.where(finished, torch.full_like(token, opts.pad_token_id), token)
    return codes, logps, token, finished | torch.isin(token, eos)


def _policy_logits(model, backbone, states, mask, position_ids, policy_cache):
    """The policy's logits at the last position of `states`, extending its cache."""
    rotary = backbone.rotary(states, position_ids)
    causal = create_causal_mask(model.policy.config, states, mask, policy_cache)
    return model.policy(states, rotary, causal, cache=policy_cache)[:, -1]


def decode_step(
    model,
    backbone,
    base_cache,
    policy_cache,
    token,
    mask,
    position_ids,
    finished,
    eos,
    suppress,
    code_noise,
    token_noise,
    forced,
    opts: _StepOptions,
):
    """One latent decoding step, the unit `compile_step` compiles: feed the previous `token` (B,) to the base (one token
    forward from its cache), run the policy layers on the new state (from theirs), choose the code and let the world
    model produce the next token. `mask` is the 2-D attention mask over the cache (for a static cache its full width).
    Returns (state (B, 1, d), codes, code log-probs, tokens, finished)."""
    e_last = backbone.states(token[:, None], mask, position_ids, cache=base_cache)
    policy_logits = _policy_logits(model, backbone, e_last, mask, position_ids, policy_cache)
    codes, logps, token, finished = _choose(
        model, e_last, policy_logits, finished, eos, suppress, code_noise, token_noise, forced, opts
    )
    return e_last, codes, logps, token, finished


# Static caches hold `STATIC_CACHE_MULTIPLE`-rounded lengths, so prompts of nearby widths share one compiled step.
STATIC_CACHE_MULTIPLE = 64
# Compiled steps by `torch.compile` mode, and the static caches a compiled step reuses, per model (a compiled step is
# specialised on its caches: fresh caches each call would recompile it and re-record its CUDA graphs).
_COMPILED_STEPS: dict[str, object] = {}
_REUSED_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_step(device: torch.device):
    # CUDA graphs (`reduce-overhead`) remove the per-kernel launch cost that dominates one-token steps on a GPU.
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED_STEPS:
        _COMPILED_STEPS[mode] = torch.compile(decode_step, mode=mode)
    return _COMPILED_STEPS[mode]


def _static_caches(model, backbone, batch: int, length: int, reuse: bool):
    """(base cache, policy cache) pre-allocated for `length` positions. With `reuse` the pair is kept on the model and
    reset for the next call of the same shape (see `free_decoding_caches`)."""

    def build():
        return (
            StaticCache(config=backbone.text_config, max_cache_len=length),
            StaticCache(config=model.policy.config, max_cache_len=length),
        )

    if not reuse:
        return build()
    kept = _REUSED_CACHES.setdefault(model, {})
    key = (batch, length)
    if key not in kept:
        kept.clear()  # one shape at a time: a new rollout shape frees the previous caches
        kept[key] = build()
    for cache in kept[key]:
        cache.reset()
    return kept[key]


def free_decoding_caches(model) -> None:
    """Free the static KV caches `latent_generate(..., compile_step=True)` keeps on `model` between calls."""
    _REUSED_CACHES.pop(model, None)


@torch.no_grad()
def latent_generate(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.LongTensor | None = None,
    mm_token_type_ids: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 32,
    do_sample_codes: bool = True,
    code_temperature: float = ROLLOUT_CODE_TEMPERATURE,
    code_top_k: int | None = ROLLOUT_CODE_TOP_K,
    code_top_p: float | None = ROLLOUT_CODE_TOP_P,
    token_strategy: str = TOKEN_STRATEGY,
    token_temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    forced_codes: torch.LongTensor | None = None,
    suppress_token_ids: list[int] | None = None,
    return_states: bool = False,
    generator: torch.Generator | None = None,
    cache_implementation: str = DEFAULT_CACHE_IMPLEMENTATION,
    compile_step: bool = False,
    **unused,
) -> LatentGenerateOutput:
    """Batched latent decoding with two KV caches (base and policy).

    Codes: sampled with temperature / top-k / top-p (`do_sample_codes=True`, the RL rollout default: top-k 32,
    temperature 1) or argmax; `forced_codes` (B, T) replaces the choice. Tokens: greedy (default: all exploration
    comes from the codes) or sampled. Rows stop at EOS (kept, mask 1) and are padded afterwards; decoding stops once
    every row has finished. `suppress_token_ids` can never be emitted; by default the base's image and video
    placeholder tokens (as TRL suppresses the image token when sampling: a generated `<|image_pad|>` matches no image
    features).

    Caches: `cache_implementation="dynamic"` grows both caches by one position per step; `"static"` pre-allocates
    them (transformers' `StaticCache`) for the prompt width + `max_new_tokens` (rounded up to a multiple of
    `STATIC_CACHE_MULTIPLE`), so every step has the same shapes. `compile_step=True` (static only) runs each step
    through `torch.compile` (`mode="reduce-overhead"`, i.e. CUDA graphs, on CUDA); its caches stay on the model for
    the next call of the same shape (`free_decoding_caches(model)` frees them). Both paths draw the same random
    numbers and give the same codes and tokens for the same seed.
    """
    if token_strategy not in TOKEN_STRATEGIES:
        raise ValueError(f"token_strategy must be one of {TOKEN_STRATEGIES} (got {token_strategy!r}).")
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(
            f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS} (got {cache_implementation!r})."
        )
    if compile_step and cache_implementation != "static":
        raise ValueError(
            "compile_step=True needs cache_implementation='static': a dynamic cache changes shape every step, so a "
            "compiled step would recompile (and could not be captured in a CUDA graph)."
        )
    backbone = model.backbone
    config = backbone.base.config
    device = input_ids.device
    if eos_token_id is None:
        eos_token_id = getattr(model.base.generation_config, "eos_token_id", None) or config.eos_token_id
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or []), device=device)
    if pad_token_id is None:
        pad_token_id = getattr(model.base.generation_config, "pad_token_id", None)
        pad_token_id = pad_token_id if pad_token_id is not None else (eos[0].item() if len(eos) else 0)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids, attention_mask, mm_token_type_ids = left_align(input_ids, attention_mask, mm_token_type_ids)
    batch, prompt_len = input_ids.shape
    if prompt_len + max_new_tokens > backbone.max_positions:
        raise ValueError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the base model's maximum of "
            f"{backbone.max_positions} positions: shorten the prompt or lower max_new_tokens."
        )
    if suppress_token_ids is None:
        suppress_token_ids = [t for t in (backbone.image_token_id, backbone.video_token_id) if t is not None]
    suppress = torch.tensor(suppress_token_ids, dtype=torch.long, device=device)
    if forced_codes is not None and forced_codes.shape != (batch, max_new_tokens):
        raise ValueError(f"forced_codes must have shape {(batch, max_new_tokens)} (got {tuple(forced_codes.shape)}).")
    opts = _StepOptions(
        do_sample_codes=do_sample_codes,
        code_temperature=code_temperature,
        code_top_k=code_top_k,
        code_top_p=code_top_p,
        token_strategy=token_strategy,
        token_temperature=token_temperature,
        pad_token_id=pad_token_id,
    )
    n_codes = model.config.codebook_size
    vocab = backbone.lm_head.out_features

    def noises():
        # Drawn eagerly, in this order, by both paths: codes (when sampled), then tokens (when sampled).
        code_noise = token_noise = None
        if do_sample_codes and forced_codes is None:
            code_noise = exponential_noise((batch, n_codes), device, generator)
        if token_strategy == "sample":
            token_noise = exponential_noise((batch, vocab), device, generator)
        return code_noise, token_noise

    # Caches. Static: the 2-D mask spans the whole cache; positions not yet written are hidden by causality.
    static = cache_implementation == "static"
    if static:
        length = -(-(prompt_len + max_new_tokens) // STATIC_CACHE_MULTIPLE) * STATIC_CACHE_MULTIPLE
        base_cache, policy_cache = _static_caches(model, backbone, batch, length, reuse=compile_step)
        full_mask = attention_mask.new_ones(batch, length)
        full_mask[:, :prompt_len] = attention_mask
        full_mask[:, prompt_len + max_new_tokens :] = 0
    else:
        base_cache = DynamicCache(config=backbone.text_config)
        policy_cache = DynamicCache(config=model.policy.config)
    step_fn = _compiled_step(device) if compile_step else decode_step
    cudagraphs = compile_step and device.type == "cuda"

    # Prompt pass (eager): base states into the base cache, then the policy over the whole prompt into its cache.
    base = model.encode(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, cache=base_cache)
    e, prompt_positions = base.states, base.position_ids
    del base
    policy_logits = _policy_logits(model, backbone, e, attention_mask, prompt_positions, policy_cache)
    next_pos = backbone.next_position(prompt_positions, attention_mask)

    # Outputs are written into pre-allocated buffers (a CUDA-graph step reuses its output memory on the next replay).
    tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    codes_out = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    logps_out = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    masks = torch.zeros(batch, max_new_tokens, dtype=torch.bool, device=device)
    states = None
    if return_states:
        states = e.new_empty(batch, prompt_len + max_new_tokens - 1, e.shape[-1])
        states[:, :prompt_len] = e
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    code_noise, token_noise = noises()
    forced = forced_codes[:, 0] if forced_codes is not None else None
    codes, logps, token, now_finished = _choose(
        model, e[:, -1:], policy_logits, finished, eos, suppress, code_noise, token_noise, forced, opts
    )
    del e, policy_logits
    mask = attention_mask
    steps = max_new_tokens
    for step in range(max_new_tokens):
        tokens[:, step], codes_out[:, step], logps_out[:, step] = token, codes, logps
        masks[:, step] = ~finished
        finished = now_finished.clone()
        if step == max_new_tokens - 1 or bool(finished.all()):  # early stop: one host sync per step
            steps = step + 1
            break
        # Feed the new token: one base token forward and one policy step, both from their caches.
        if static:
            mask = full_mask
        else:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step_pos = backbone.step_position_ids(next_pos + step)
        code_noise, token_noise = noises()
        forced = forced_codes[:, step + 1] if forced_codes is not None else None
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        e_last, codes, logps, token, now_finished = step_fn(
            model,
            backbone,
            base_cache,
            policy_cache,
            tokens[:, step],
            mask,
            step_pos,
            finished,
            eos,
            suppress,
            code_noise,
            token_noise,
            forced,
            opts,
        )
        if return_states:
            states[:, prompt_len + step] = e_last[:, -1]
    del base_cache, policy_cache  # the caches are freed here, before the outputs are assembled (unless reused)

    # An early stop leaves the buffers' tails unused: the outputs are their (contiguous) first `steps` columns.
    completion_ids = tokens[:, :steps].contiguous()
    completion_mask = masks[:, :steps].long()
    sequences = torch.cat([input_ids, completion_ids], 1)
    full_attention = torch.cat([attention_mask, completion_mask], 1)
    # Position ids for the whole sequence; the last token (never fed back) continues its row.
    completion_positions = next_pos[:, None] + torch.arange(steps, device=device)
    if prompt_positions.dim() == 3:
        completion_positions = completion_positions.unsqueeze(0).expand(prompt_positions.shape[0], -1, -1)
    return LatentGenerateOutput(
        sequences=sequences,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        codes=codes_out[:, :steps].contiguous(),
        code_logprobs=logps_out[:, :steps].contiguous(),
        states=states[:, : prompt_len + steps - 1].contiguous() if return_states else None,
        position_ids=torch.cat([prompt_positions, completion_positions], dim=-1),
        attention_mask=full_attention,
    )
