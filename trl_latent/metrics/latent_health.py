"""Latent-space health: can the world model say what the task needs, and do the codes change what it says?

A latent action space is useful for RL only if both hold (docs/architecture.md section 2):
- **reachability**: for the answer tokens of held-out dialogues, some code makes the world model emit the right token
  (`health/world_accuracy_best`);
- **controllability**: different codes make it emit different tokens (`health/controllability`, the mean number of
  distinct next tokens across all codes at an answer position; 1 means the codes do not matter).

Next to them: the world model's accuracy with the inverse dynamics model's codes (what stages 1-3 train) and with the
policy's argmax codes (what greedy inference does), the base alone for reference, the codes the policy and the IDM use,
and the policy's mean per-step code entropy (room to explore). [`latent_health`] measures them all on collated batches
(a `LatentDataCollator`'s paired stream: `loss_mask` marks the answer tokens).

**Code gain** says whether the codes carry anything: the world model's teacher-forced next-token accuracy with the
IDM's code (`health/code_gain_inverse`) and with the policy's code (`health/code_gain_policy`) *minus* its accuracy
with a uniformly random code at every position (`health/world_accuracy_random`, seeded). Code usage and perplexity
measure how codes are used, not whether they change anything; a gain near 0 means the world model says the same
whatever the code.

Cost: every vocabulary logit costs a row of `lm_head` (hidden x vocabulary multiply-adds). The accuracies take 4 rows
per answer position (base, IDM, policy, random code); trying every code takes |C| rows per position, which at a real
vocabulary (49,152 tokens, 128 codes, thousands of answer positions) is minutes on a CPU. `sweep_positions` runs
that sweep (best code, controllability, content controllability) on a seeded sample of that many positions instead
of all of them, and `positions` samples the positions of the accuracies the same way (both exact by default).

Given content words by kind (`{"colour": ["red", ...], "shape": [...]}`), it also measures **content
controllability** (`CONTENT_HEALTH_METRICS`): at the answer positions whose token begins a word of a kind, the number
of distinct argmax tokens over all codes that begin a word of *that* kind, i.e. how many right-kind words the codes can
put there (`health/content_controllability`, and per kind `health/content_controllability/<kind>`). Plain
controllability also counts codes that emit a comma or a misspelling; this counts only alternatives RL could use.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import torch

from ..modeling.modules import entropy_from_logits

__all__ = [
    "CONTENT_HEALTH_METRICS",
    "HEALTH_METRICS",
    "WordStarts",
    "content_controllability",
    "content_token_ids",
    "latent_health",
]

HEALTH_METRICS = (
    "health/base_accuracy",
    "health/world_accuracy_inverse",
    "health/world_accuracy_policy",
    "health/world_accuracy_random",
    "health/code_gain_inverse",
    "health/code_gain_policy",
    "health/world_accuracy_best",
    "health/controllability",
    "health/codes_used_policy",
    "health/codes_used_inverse",
    "health/policy_entropy",
)
# Measured too when `latent_health` is given content words, each also per kind (`<metric>/<kind>`, for the kinds whose
# words occur at some answer position); `health/content_controllability` is absent when none does.
CONTENT_HEALTH_METRICS = (
    "health/content_controllability",
    "health/content_positions",
)


def _distinct_per_column(tokens: torch.Tensor) -> torch.Tensor:
    """Number of distinct values in each column of `tokens` (C, N): (N,)."""
    ordered = tokens.sort(dim=0).values
    return 1 + (ordered[1:] != ordered[:-1]).sum(0)


def _first_token(tokenizer, text: str) -> int | None:
    """The token `text` begins with: the first one that decodes to more than whitespace (a BPE may split a space off
    on its own)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    for i in range(len(ids)):
        if tokenizer.decode(ids[: i + 1]).strip():
            return ids[i]
    return None


@dataclass(frozen=True)
class WordStarts:
    """The token ids that begin a word of one kind.

    Attributes:
        spaced (`frozenset[int]`): tokens that carry the space before the word (`Ġred`): a word begins wherever they
            are.
        bare (`frozenset[int]`): tokens without it (`red`, or `re` of `re` + `d` in a small vocabulary): they begin a
            word only after a character that ends one (a space, a newline, punctuation, a special token), and are
            parts of other words elsewhere ("hund" + "red").
    """

    spaced: frozenset[int] = frozenset()
    bare: frozenset[int] = frozenset()


def content_token_ids(tokenizer, content_words: Mapping[str, Iterable[str]]) -> dict[str, WordStarts]:
    """The first tokens of each kind's words, as the words appear in text: after a space (`" red"`) and at the start
    of a text or a line (`"red"`), which a byte-level BPE tokenizes differently (`Ġred` vs `re` + `d`).

    Words are taken as given: list capitalised forms (`"Red"`) as words of their own when the answers use them. With a
    small vocabulary a first token can begin words of several kinds (`Ġt` for "two" and "triangle"); it then belongs
    to each of them.

    Args:
        tokenizer (`PreTrainedTokenizerBase` or a processor holding one as `.tokenizer`): the model's tokenizer.
        content_words (`Mapping[str, Iterable[str]]`): kind -> its words, e.g. `{"colour": ["red", "green"]}`.

    Returns:
        `dict[str, WordStarts]`: kind -> the first tokens of its words.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    anchor = tokenizer.encode("a", add_special_tokens=False)
    after = len(tokenizer.decode(anchor))
    kinds = {}
    for kind, words in content_words.items():
        if isinstance(words, str):
            raise TypeError(f"The words of kind {kind!r} must be a list of words, got the string {words!r}.")
        spaced, bare = set(), set()
        for word in words:
            word = word.strip()
            if not word:
                raise ValueError(f"Kind {kind!r} lists an empty word.")
            for text in (word, " " + word):
                first = _first_token(tokenizer, text)
                if first is not None:
                    # Whether the token brings its own space: "a" followed by it decodes to "a red", not "ared".
                    (spaced if tokenizer.decode([*anchor, first])[after:][:1].isspace() else bare).add(first)
        kinds[kind] = WordStarts(frozenset(spaced), frozenset(bare - spaced))
    return kinds


def _ends_word(text: str) -> bool:
    """Whether a token whose text is `text` ends a word (a bare token after it begins one)."""
    return not text or not (text[-1].isalnum() or text[-1] in "_'\u2019")


def content_controllability(
    tokens: torch.Tensor,
    targets: torch.Tensor,
    kind_tokens: Mapping[str, WordStarts | Collection[int]],
    word_start: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Right-kind controllability at content positions: at every position whose target begins a word of a kind, the
    number of distinct argmax tokens over the codes that begin a word of that kind.

    Args:
        tokens (`torch.Tensor` of shape `(C, N)`): the world model's argmax token for every code at every position.
        targets (`torch.Tensor` of shape `(N,)`): the reference token at every position.
        kind_tokens (`Mapping[str, WordStarts | Collection[int]]`): kind -> the tokens that begin a word of it
            ([`content_token_ids`]); a plain collection of ids is taken as tokens that begin a word anywhere.
        word_start (`torch.Tensor` of shape `(N,)`, *optional*): where a word may begin (the token before ends one),
            the positions at which `bare` tokens count; everywhere when not given.

    Returns:
        `dict[str, torch.Tensor]`: for each kind some target begins a word of, the number of distinct right-kind
        argmax tokens at each of its positions, shape `(n_kind,)`; 0 where no code begins a word of the kind.
    """
    counts = {}
    for kind, starts in kind_tokens.items():
        if not isinstance(starts, WordStarts):
            starts = WordStarts(frozenset(starts))

        def right_kind(ids, starts=starts):
            spaced = torch.tensor(sorted(starts.spaced), dtype=ids.dtype, device=ids.device)
            bare = torch.tensor(sorted(starts.bare), dtype=ids.dtype, device=ids.device)
            right = torch.isin(ids, spaced)
            if len(bare):
                right |= torch.isin(ids, bare) & (True if word_start is None else word_start.to(ids.device))
            return right

        at = right_kind(targets)
        if not at.any():
            continue
        emitted = tokens[:, at]
        right = right_kind(tokens)[:, at]
        # Distinct values with every wrong-kind token as one -1, then that -1 taken off where it occurs.
        distinct = _distinct_per_column(torch.where(right, emitted, -1))
        counts[kind] = distinct - (~right).any(0).to(distinct.dtype)
    return counts


def _world_argmax(model, e_steps: torch.Tensor, codes: torch.Tensor, max_logits: int, code_chunk: int):
    """The world model's argmax token for codes `codes` (K, N) at states `e_steps` (N, d): (K, N). Runs in blocks of
    codes x steps whose logits stay within `max_logits` values (never the whole (K, N, V) tensor)."""
    vocab = model.backbone.lm_head.weight.shape[0]
    n_codes, n_steps = codes.shape
    code_chunk = max(1, min(code_chunk, n_codes))
    step_chunk = max(1, max_logits // (code_chunk * vocab))
    tokens = torch.empty(n_codes, n_steps, dtype=torch.long, device=e_steps.device)
    for start in range(0, n_codes, code_chunk):
        rows = slice(start, min(start + code_chunk, n_codes))
        for first in range(0, n_steps, step_chunk):
            cols = slice(first, min(first + step_chunk, n_steps))
            part = e_steps[cols]
            block = codes[rows, cols]
            states = part[None].expand(block.shape[0], -1, -1)
            tokens[rows, cols] = model.world_logits(states, block).argmax(-1)
    return tokens


def _base_argmax(lm_head, e_steps: torch.Tensor, max_logits: int) -> torch.Tensor:
    vocab = lm_head.weight.shape[0]
    step_chunk = max(1, max_logits // vocab)
    return torch.cat(
        [
            lm_head(e_steps[first : first + step_chunk].to(lm_head.weight.dtype)).argmax(-1)
            for first in range(0, e_steps.shape[0], step_chunk)
        ]
    )


@torch.no_grad()
def latent_health(
    model,
    batches,
    code_chunk: int = 16,
    max_logits: int = 2**26,
    content_words: Mapping[str, Iterable[str]] | None = None,
    tokenizer=None,
    sweep_positions: int | None = None,
    seed: int = 0,
    positions: int | None = None,
) -> dict[str, float]:
    """Measure the latent-space health metrics of `model` over `batches`.

    Args:
        model ([`LatentActionModel`]): the latent model (its current `config.world_output` form is measured).
        batches (iterable of `dict`): collated paired batches (`input_ids`, `attention_mask`, `loss_mask`, and the
            image inputs when present); `loss_mask` marks the tokens to predict (the answers, with
            `assistant_only_loss`). A batch may carry its base states as `states` (B, S, d) (e.g. from
            [`~trl_latent.training.state_cache.BaseStateCache`]); the base then does not run for it.
        code_chunk (`int`, *optional*, defaults to `16`): codes scored per world-model pass when trying every code.
        max_logits (`int`, *optional*, defaults to `2**26`): the most vocabulary logits one pass holds (256 MB in
            fp32); steps are scored in blocks that fit.
        content_words (`Mapping[str, Iterable[str]]`, *optional*):
            Kind -> words (`{"colour": ["red", ...], "count": ["one", ...]}`): also measure content controllability
            ([`content_controllability`]) at the answer positions whose token begins a word of a kind (first tokens
            from [`content_token_ids`]; one without its leading space only where the token before it ends a word),
            from the same per-code argmax tokens (no extra world-model pass).
        tokenizer (`PreTrainedTokenizerBase`, *optional*): the model's tokenizer (or processor); required with
            `content_words`.
        sweep_positions (`int`, *optional*): try every code at a seeded uniform sample of at most this many answer
            positions (`health/world_accuracy_best`, `health/controllability` and content controllability are
            measured there, and `health/sweep_positions` says how many); `None` (default): at every position.
        seed (`int`, *optional*, defaults to `0`): seeds the random codes (one uniform draw per answer position, in
            batch order: `torch.randint(|C|, (N,), generator=torch.Generator().manual_seed(seed))` over a batch's N
            positions, continuing across batches) and the sample of swept positions (its own generator with the same
            seed).
        positions (`int`, *optional*): measure the accuracies, code gains, codes used and policy entropy at a seeded
            uniform sample of at most this many answer positions (`health/positions` says how many); `None`
            (default): at every position. The sweep's sample is drawn from the same seeded order.

    Returns:
        `dict[str, float]`: the `HEALTH_METRICS`, and with `content_words` the `CONTENT_HEALTH_METRICS`:
        `health/content_controllability` (mean over the measured content positions, a position counted once per kind
        its token begins a word of), `health/content_positions` (how many), and both per kind
        (`health/content_controllability/<kind>`, `health/content_positions/<kind>`) for the kinds that occur. Empty
        when the batches hold no token to predict.
    """
    for name, value in (("sweep_positions", sweep_positions), ("positions", positions)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1 (or None: every position), got {value}.")
    kind_tokens = None
    if content_words is not None:
        if tokenizer is None:
            raise ValueError("`content_words` needs the model's `tokenizer` to find the words' first tokens.")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        kind_tokens = content_token_ids(tokenizer, content_words)
    batches = list(batches)
    content_sum: dict[str, int] = {}
    content_count: dict[str, int] = {}
    was_training = model.training
    model.eval()
    n_codes = model.config.codebook_size
    lm_head = model.backbone.lm_head
    hits = dict.fromkeys(("base", "inverse", "policy", "random", "best"), 0)
    distinct = entropy = 0.0
    total = swept = 0
    used_policy = torch.zeros(n_codes, dtype=torch.bool)
    used_inverse = torch.zeros(n_codes, dtype=torch.bool)
    random_codes = torch.Generator().manual_seed(seed)
    # Which answer positions the every-code sweep visits: all, or a seeded uniform sample over the whole set.
    n_positions = [int(b["loss_mask"][:, 1:].bool().sum()) for b in batches]
    n_all = sum(n_positions)
    order = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed)) if n_all else None

    def first_of_order(cap):
        if cap is None or n_all <= cap:
            return None
        chosen = torch.zeros(n_all, dtype=torch.bool)
        chosen[order[:cap]] = True
        return chosen

    sample, measured = first_of_order(sweep_positions), first_of_order(positions)
    offset = 0
    try:
        for batch, n in zip(batches, n_positions, strict=True):
            steps = batch["loss_mask"][:, 1:].bool()
            if n == 0:
                continue
            if batch.get("states") is not None:
                positions = model.backbone.position_ids(
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch.get("image_grid_thw"),
                    batch.get("mm_token_type_ids"),
                )
                base = model.states_view(batch["states"], batch["attention_mask"], positions)
            else:
                base = model.encode(
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch.get("pixel_values"),
                    batch.get("image_grid_thw"),
                    batch.get("mm_token_type_ids"),
                )
            e = base.states
            targets = batch["input_ids"][:, 1:][steps]
            e_steps = e[:, :-1][steps]  # (N, d)
            inverse_codes = model.inverse_logits(e, base)[:, :-1][steps].argmax(-1)
            policy_logits = model.policy_logits(e, base)[:, :-1][steps].float()
            drawn = torch.randint(n_codes, (n,), generator=random_codes).to(e.device)
            at = torch.ones(n, dtype=torch.bool) if sample is None else sample[offset : offset + n]
            keep = None if measured is None else measured[offset : offset + n].to(e.device)
            offset += n
            at = at.to(e.device)
            sweep_e, sweep_targets = e_steps[at], targets[at]
            sweep_previous = batch["input_ids"][:, :-1][steps][at]
            if keep is not None:  # the accuracies on the sampled positions only
                e_steps, targets, drawn = e_steps[keep], targets[keep], drawn[keep]
                inverse_codes, policy_logits = inverse_codes[keep], policy_logits[keep]
            policy_codes = policy_logits.argmax(-1)

            hits["base"] += int((_base_argmax(lm_head, e_steps, max_logits) == targets).sum())
            codes = torch.stack([inverse_codes, policy_codes, drawn])
            predicted = _world_argmax(model, e_steps, codes, max_logits, code_chunk)
            for row, name in enumerate(("inverse", "policy", "random")):
                hits[name] += int((predicted[row] == targets).sum())
            # Every code at every (swept) step: (|C|, N') argmax tokens, in blocks of codes x steps whose logits stay
            # within `max_logits` values (a 152K vocabulary makes the full (|C|, N, V) tensor far too large).
            if at.any():
                n_at = int(at.sum())
                every = torch.arange(n_codes, device=e.device)[:, None].expand(-1, n_at)
                tokens = _world_argmax(model, sweep_e, every, max_logits, code_chunk)
                swept_targets = sweep_targets
                hits["best"] += int((tokens == swept_targets[None]).any(0).sum())
                distinct += float(_distinct_per_column(tokens).sum())
                swept += n_at
                if kind_tokens is not None:
                    # A bare first token begins a word only where the token before it ends one.
                    previous = sweep_previous
                    ends = {i: _ends_word(tokenizer.decode([i])) for i in previous.unique().tolist()}
                    word_start = torch.tensor([ends[i] for i in previous.tolist()], device=previous.device)
                    for kind, counts in content_controllability(
                        tokens, swept_targets, kind_tokens, word_start
                    ).items():
                        content_sum[kind] = content_sum.get(kind, 0) + int(counts.sum())
                        content_count[kind] = content_count.get(kind, 0) + counts.numel()
            entropy += float(entropy_from_logits(policy_logits).sum())
            used_policy[policy_codes.unique().cpu()] = True
            used_inverse[inverse_codes.unique().cpu()] = True
            total += targets.numel()
    finally:
        model.train(was_training)
    if total == 0:
        return {}
    accuracy = {name: hits[name] / total for name in ("base", "inverse", "policy", "random")}
    metrics = {
        "health/base_accuracy": accuracy["base"],
        "health/world_accuracy_inverse": accuracy["inverse"],
        "health/world_accuracy_policy": accuracy["policy"],
        "health/world_accuracy_random": accuracy["random"],
        "health/code_gain_inverse": accuracy["inverse"] - accuracy["random"],
        "health/code_gain_policy": accuracy["policy"] - accuracy["random"],
        "health/world_accuracy_best": hits["best"] / swept,
        "health/controllability": distinct / swept,
        "health/codes_used_policy": float(used_policy.sum()),
        "health/codes_used_inverse": float(used_inverse.sum()),
        "health/policy_entropy": entropy / total,
    }
    if sample is not None:
        metrics["health/sweep_positions"] = float(swept)
    if measured is not None:
        metrics["health/positions"] = float(total)
    if kind_tokens is not None:
        positions = sum(content_count.values())
        if positions:
            metrics["health/content_controllability"] = sum(content_sum.values()) / positions
        metrics["health/content_positions"] = float(positions)
        for kind in kind_tokens:
            if content_count.get(kind):
                metrics[f"health/content_controllability/{kind}"] = content_sum[kind] / content_count[kind]
                metrics[f"health/content_positions/{kind}"] = float(content_count[kind])
    return metrics
