"""Latent decoding: the policy picks a code per step, the frozen world model turns (state, code) into the next token.

One step (docs/architecture.md section 2): `e_t = B(x_V, x_<=t)`; `a_t ~ pi(. | e_<=t)`; `x_{t+1} = argmax lm_head(...)`.
Both the base and the policy keep a KV cache, so a step costs one base forward of one token plus the policy layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.utils import ModelOutput

TOKEN_STRATEGIES = ("greedy", "sample")


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


def choose_codes(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick codes from policy logits (B, |C|); returns (codes, log-probs under softmax(logits / temperature))."""
    scaled = logits.float() / max(temperature, 1e-6)
    if do_sample:
        probs = filter_code_logits(scaled, top_k, top_p).softmax(-1)
        codes = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
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
    code_temperature: float = 1.0,
    code_top_k: int | None = 32,
    code_top_p: float | None = 1.0,
    token_strategy: str = "greedy",
    token_temperature: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    forced_codes: torch.LongTensor | None = None,
    suppress_token_ids: list[int] | None = None,
    return_states: bool = False,
    generator: torch.Generator | None = None,
    **unused,
) -> LatentGenerateOutput:
    """Batched latent decoding with two KV caches (base and policy).

    Codes: sampled with temperature / top-k / top-p (`do_sample_codes=True`, the RL rollout default: top-k 32,
    temperature 1) or argmax; `forced_codes` (B, T) replaces the choice. Tokens: greedy (default: all exploration
    comes from the codes) or sampled. Rows stop at EOS (kept, mask 1) and are padded afterwards.
    `suppress_token_ids` can never be emitted; by default the base's image and video placeholder tokens (as TRL
    suppresses the image token when sampling: a generated `<|image_pad|>` matches no image features).
    """
    if token_strategy not in TOKEN_STRATEGIES:
        raise ValueError(f"token_strategy must be one of {TOKEN_STRATEGIES} (got {token_strategy!r}).")
    backbone = model.backbone
    config = backbone.base.config
    if eos_token_id is None:
        eos_token_id = getattr(model.base.generation_config, "eos_token_id", None) or config.eos_token_id
    eos = torch.tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or []), device=input_ids.device
    )
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
    suppress = torch.tensor(suppress_token_ids, dtype=torch.long, device=input_ids.device)
    if forced_codes is not None and forced_codes.shape != (batch, max_new_tokens):
        raise ValueError(f"forced_codes must have shape {(batch, max_new_tokens)} (got {tuple(forced_codes.shape)}).")

    # Prompt pass: base states with a fresh cache, then the policy over the whole prompt with its own cache.
    base_cache = DynamicCache(config=backbone.text_config)
    base = model.encode(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, cache=base_cache)
    e, position_ids = base.states, base.position_ids
    policy_cache = DynamicCache(config=model.policy.config)

    def policy_step(states, mask, pos):
        rotary = backbone.rotary(states, pos)
        causal = create_causal_mask(model.policy.config, states, mask, policy_cache)
        return model.policy(states, rotary, causal, cache=policy_cache)[:, -1]

    policy_logits = policy_step(e, attention_mask, position_ids)
    next_pos = backbone.next_position(position_ids, attention_mask)
    states = [e] if return_states else None
    positions = [position_ids]
    tokens, codes_out, logps_out, masks = [], [], [], []
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    mask = attention_mask
    e_last = e[:, -1:]
    for step in range(max_new_tokens):
        if forced_codes is not None:
            codes = forced_codes[:, step]
            logps = torch.log_softmax(policy_logits.float() / max(code_temperature, 1e-6), -1)
            logps = logps.gather(-1, codes[:, None]).squeeze(-1)
        else:
            codes, logps = choose_codes(
                policy_logits,
                do_sample=do_sample_codes,
                temperature=code_temperature,
                top_k=code_top_k,
                top_p=code_top_p,
                generator=generator,
            )
        token_logits = model.world_logits(e_last, codes[:, None])[:, -1]
        if len(suppress):
            token_logits[:, suppress] = float("-inf")
        if token_strategy == "greedy":
            token = token_logits.argmax(-1)
        else:
            probs = (token_logits / max(token_temperature, 1e-6)).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        tokens.append(token)
        codes_out.append(codes)
        logps_out.append(logps)
        masks.append(~finished)
        finished = finished | torch.isin(token, eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        # Feed the new token: one base token forward and one policy step, both from their caches.
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step_pos = backbone.step_position_ids(next_pos)
        next_pos = next_pos + 1
        e_last = backbone.states(token[:, None], mask, step_pos, cache=base_cache)
        policy_logits = policy_step(e_last, mask, step_pos)
        positions.append(step_pos)
        if return_states:
            states.append(e_last)

    completion_ids = torch.stack(tokens, 1)
    completion_mask = torch.stack(masks, 1).long()
    sequences = torch.cat([input_ids, completion_ids], 1)
    full_mask = torch.cat([attention_mask, completion_mask], 1)
    # Position ids for the whole sequence; the last token (never fed back) continues its row.
    last = backbone.step_position_ids(next_pos)
    all_positions = torch.cat(positions + [last], dim=-1)[..., : sequences.shape[1]]
    return LatentGenerateOutput(
        sequences=sequences,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        codes=torch.stack(codes_out, 1),
        code_logprobs=torch.stack(logps_out, 1),
        states=torch.cat(states, 1) if return_states else None,
        position_ids=all_positions,
        attention_mask=full_mask,
    )
