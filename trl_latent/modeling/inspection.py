"""What do the latent actions mean? Per code: how often it is used on a dataset, and which tokens it makes the world
model emit most often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch


@torch.no_grad()
def inspect_codes(
    model,
    batches: Iterable[dict],
    tokenizer=None,
    *,
    code_source: str = "inverse",
    top_n: int = 5,
    max_states_per_batch: int = 256,
    examples: int = 0,
    context_tokens: int = 8,
) -> list[dict]:
    """Usage and meaning of every code.

    Args:
        model: a `LatentActionModel`.
        batches: processor outputs (`input_ids`, `attention_mask`, and for VLMs `pixel_values`, `image_grid_thw`,
            `mm_token_type_ids`), e.g. from a DataLoader.
        tokenizer: turns token ids into readable strings (optional).
        code_source: `"inverse"` labels each step with the inverse dynamics model's argmax (what the data did);
            `"policy"` with the policy's argmax (what the agent would do).
        top_n: how many of each code's most emitted tokens to report.
        max_states_per_batch: text states per batch at which every code is forced (bounds the cost on big models).
        examples: how many places in the data to show per code: the text up to the step the code was chosen at, and
            the token that followed in the data.
        context_tokens: how many tokens of text before each example's step to show.

    Returns:
        One dict per code, sorted by code id: `code`, `count`, `frequency`, `top_tokens` (list of
        `(token, share)`, where share is the fraction of probed states at which forcing this code makes the world
        model's argmax token that token), `examples` (up to `examples` dicts `{"context", "next"}`).
    """
    if code_source not in ("inverse", "policy"):
        raise ValueError(f"code_source must be 'inverse' or 'policy' (got {code_source!r}).")
    was_training = model.training
    model.eval()
    n_codes = model.config.codebook_size
    usage = torch.zeros(n_codes, dtype=torch.long)
    emitted = [Counter() for _ in range(n_codes)]
    shown: list[list[tuple[list[int], int | None]]] = [[] for _ in range(n_codes)]
    probed = 0
    for batch in batches:
        base = model.encode(**batch)
        e = base.states
        if code_source == "inverse":
            logits = model.inverse_logits(e, base)
            mask = base.text_mask.clone()
            mask[:, -1] = False  # the last step has no future token to label it
        else:
            logits = model.policy_logits(e, base)
            mask = base.text_mask
        codes = logits.argmax(-1)
        usage += torch.bincount(codes[mask].flatten().cpu(), minlength=n_codes)
        if examples:
            ids = batch["input_ids"]
            for row, step in mask.nonzero().tolist():
                code = int(codes[row, step])
                if len(shown[code]) < examples:
                    following = int(ids[row, step + 1]) if step + 1 < ids.shape[1] else None
                    shown[code].append((ids[row, max(0, step + 1 - context_tokens) : step + 1].tolist(), following))
        states = e[mask][:max_states_per_batch]  # (N, d)
        if states.numel() == 0:
            continue
        probed += states.shape[0]
        for code in range(n_codes):
            forced = torch.full((1, states.shape[0]), code, dtype=torch.long, device=states.device)
            tokens = model.world_logits(states[None], forced)[0].argmax(-1)
            emitted[code].update(tokens.tolist())
    model.train(was_training)
    total = int(usage.sum())

    def readable(ids):
        return tokenizer.decode(ids) if tokenizer is not None else ids

    report = []
    for code in range(n_codes):
        top = emitted[code].most_common(top_n)
        tokens = [
            (tokenizer.decode([tok]) if tokenizer is not None else tok, count / max(probed, 1)) for tok, count in top
        ]
        report.append(
            {
                "code": code,
                "count": int(usage[code]),
                "frequency": int(usage[code]) / total if total else 0.0,
                "top_tokens": tokens,
                "examples": [
                    {"context": readable(context), "next": readable([nxt]) if nxt is not None else None}
                    for context, nxt in shown[code]
                ],
            }
        )
    return report


def format_code_report(report: list[dict], only_used: bool = True) -> str:
    """A readable markdown table of `inspect_codes` output."""
    lines = ["| code | uses | share | world model emits most |", "|---:|---:|---:|---|"]
    for row in report:
        if only_used and row["count"] == 0:
            continue
        toks = ", ".join(f"{tok!r} ({share:.0%})" for tok, share in row["top_tokens"])
        lines.append(f"| {row['code']} | {row['count']} | {row['frequency']:.1%} | {toks} |")
    return "\n".join(lines)
