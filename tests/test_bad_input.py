"""Every bad input a careless but realistic user gives, and the exact behaviour each one gets.

One row per case. A row either raises (the error type, and fragments its message must hold: the file, record or
session it names, and what to do), or is skipped and counted (the count, and the warning that says so). Nothing
may crash from a library three levels down, pass silently, or leak a secret.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from trl_latent.data.collator import LatentDataCollator
from trl_latent.data.files import DataFileError
from trl_latent.data.mmrole import MMRoleFormatError, load_mmrole
from trl_latent.data.pcogalign import PCogAlignFormatError, load_pcogalign
from trl_latent.data.pretrain import BadRecordError, load_pretrain_corpus
from trl_latent.rewards.judge import JudgeCheckError, JudgeReward, OpenAIJudgeBackend
from trl_latent.training.checkpointing import CheckpointError

SAMPLES = Path(__file__).resolve().parent / "data"
KEY = "sk-test0123456789abcdefSECRET"
TEXT_RECORD = {"id": "t0", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}


@dataclass
class Outcome:
    """What a case leads to when it does not raise: the count of what was skipped or failed."""

    count: int


@dataclass
class Case:
    name: str
    run: Callable  # run(ctx) -> Outcome, or raises
    error: type[BaseException] | None = None
    fragments: tuple[str, ...] = ()  # in the error message, or (for a skip) in the warning; "{dir}" is the case dir
    count: int | None = None
    absent: tuple[str, ...] = field(default_factory=lambda: (KEY,))  # never in the message or the logs


@dataclass
class Ctx:
    dir: Path
    shared: dict


# ------------------------------------------------------------------------------------------------ file helpers
def write(ctx, name, content: bytes | str) -> Path:
    path = ctx.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def truncated(records) -> str:
    text = json.dumps(records)
    return text[: len(text) - 7]


def pretrain_skip(ctx, content, name="corpus.jsonl"):
    corpus = load_pretrain_corpus(write(ctx, name, content), skip_bad_records=True)
    return Outcome(corpus.num_skipped)


def mmrole_root(ctx) -> Path:
    root = ctx.dir / "mmrole"
    shutil.copytree(SAMPLES / "mmrole-sample", root)
    for path in (root / "dialogues/in-distribution/comment").glob("*.json"):
        for session in json.loads(path.read_text()):
            target = root / "images" / session["image"]
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 24), "red").save(target)
    return root


def damage_dialogues(ctx, content: bytes) -> Path:
    root = mmrole_root(ctx)
    (root / "dialogues/in-distribution/comment/Black_Panther_COCO.json").write_bytes(content)
    return root


def add_session(ctx, session: dict) -> Path:
    root = mmrole_root(ctx)
    path = root / "dialogues/in-distribution/comment/Black_Panther_COCO.json"
    path.write_text(json.dumps([*json.loads(path.read_text()), session]))
    return root


def mmrole_with_truncated_image(ctx) -> Path:
    root = mmrole_root(ctx)
    session = json.loads((root / "dialogues/in-distribution/comment/Albus_Dumbledore_COCO.json").read_text())[0]
    truncate_file(root / "images" / session["image"])
    return root


def mmrole_stats(root, **kwargs):
    return load_mmrole(root, image_size=(16, 16), return_stats=True, **kwargs)[1]


def pcog_record(**overrides):
    record = {
        "individual_RoleSet": {"Home": "a Father"},
        "query": "What now?",
        "image": {"file_path": "a.png"},
        "eval_info": {"ImageDesc": "a room", "location": "Home", "EvalHelp": "be kind"},
        "golden_response": "Calm down.",
    }
    record.update(overrides)
    return record


def pcog_root(ctx, content: bytes | str, suffix=".json") -> Path:
    write(ctx, f"pcog/HCSHR-golden-test{suffix}", content)
    Image.new("RGB", (8, 8)).save(ctx.dir / "pcog" / "a.png")
    return ctx.dir / "pcog"


def pcog_truncated_image_skipped(ctx):
    root = pcog_root(ctx, json.dumps([pcog_record(), pcog_record()]))
    truncate_file(root / "a.png")
    stats = load_pcogalign(root, splits=("ls2_test",), on_missing_image="skip", return_stats=True)[1]
    return Outcome(stats["unreadable_images"])


# ------------------------------------------------------------------------------------------------ model helpers
def saved_model(ctx, shards=False) -> Path:
    folder = ctx.dir / "saved"
    model = ctx.shared["model"]
    model.save_pretrained(folder, max_shard_size="20KB" if shards else "5GB")
    return folder


def load_saved(folder):
    from trl_latent.modeling import LatentActionModel

    return LatentActionModel.from_pretrained(folder)


def truncate_file(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    return path


def moved_base(ctx):
    import json as _json

    folder = saved_model(ctx)
    config = _json.loads((folder / "config.json").read_text())
    config["base_model_name_or_path"] = str(ctx.dir / "old_place" / "base")
    (folder / "config.json").write_text(_json.dumps(config))
    return load_saved(folder)


def first_shard(folder: Path) -> Path:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / sorted(set(index["weight_map"].values()))[0]


def train_on_empty(ctx, trainer: str):
    from datasets import Dataset

    from trl_latent import LatentGRPOConfig, LatentGRPOTrainer, LatentSFTConfig, LatentSFTTrainer

    empty, out = Dataset.from_list([]), str(ctx.dir / "out")
    if trainer == "sft":
        args = LatentSFTConfig(out, stage="inverse_warmup", use_cpu=True)
        return LatentSFTTrainer(ctx.shared["model"], args, empty, processing_class=ctx.shared["processor"])
    return LatentGRPOTrainer(
        ctx.shared["model"],
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=LatentGRPOConfig(out, use_cpu=True, bf16=False),
        train_dataset=empty,
        processing_class=ctx.shared["processor"],
    )


# ------------------------------------------------------------------------------------------------ checkpoint helpers
def sft_trainer(ctx, out: Path, steps: int = 2):
    import copy

    from trl_latent import LatentSFTConfig, LatentSFTTrainer
    from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset

    args = LatentSFTConfig(
        str(out),
        stage="world_sft",
        max_steps=steps,
        save_strategy="steps",
        save_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        health_samples=0,
    )
    model = copy.deepcopy(ctx.shared["model"])
    return LatentSFTTrainer(model, args, synthetic_sft_dataset(4), processing_class=ctx.shared["processor"])


def checkpoints(ctx) -> Path:
    """A copy of a 2-step run's output_dir, a checkpoint after each step (checkpoint-1, checkpoint-2)."""
    if "run" not in ctx.shared:  # trained once per module
        sft_trainer(ctx, ctx.dir / "first_run").train()
        ctx.shared["run"] = ctx.dir / "first_run"
    run = ctx.dir / "run"
    shutil.copytree(ctx.shared["run"], run)
    return run


def resume_true_skips(ctx, damage) -> Outcome:
    """Damage checkpoint-2 as a killed save would, resolve `resume_from_checkpoint=True` as the trainers do, and count
    the folders skipped on the way to checkpoint-1."""
    from trl_latent.training.checkpointing import resolve_resume_checkpoint

    run = checkpoints(ctx)
    damage(run / "checkpoint-2")
    assert resolve_resume_checkpoint(True, run) == str(run / "checkpoint-1")
    return Outcome(1)


def resume_explicit(ctx, file: str):
    """Resume a trainer from checkpoint-2 given explicitly, `file` in it cut short."""
    run = checkpoints(ctx)
    truncate_file(next((run / "checkpoint-2").glob(file)))
    sft_trainer(ctx, run, steps=3).train(resume_from_checkpoint=str(run / "checkpoint-2"))


def no_complete_checkpoint(ctx):
    run = checkpoints(ctx)
    (run / "checkpoint-2" / "trainer_state.json").unlink()
    truncate_file(run / "checkpoint-1" / "model.safetensors")
    sft_trainer(ctx, run, steps=3).train(resume_from_checkpoint=True)


# ------------------------------------------------------------------------------------------------ judge helpers
MMROLE_COLUMNS = {"reference": ["ref"] * 3, "character": ["Iron Man"] * 3, "profile": [{"introduction": "x"}] * 3}


def judge_with(answers, rubric="mmrole", **columns):
    """Judge three completions; the scripted judge gives `answers[i]` for completion i. Returns the rewards."""
    replies = iter(answers)
    judge = JudgeReward(rubric, lambda messages: next(replies), max_concurrency=1, check_connection=False)
    logged = {}
    rewards = judge(
        ["q"] * 3,
        ["a"] * 3,
        log_metric=lambda k, v: logged.__setitem__(k, v),
        **(columns or MMROLE_COLUMNS),
    )
    return judge, rewards, logged


def all_dimensions(pair: str) -> str:
    from trl_latent.rewards.judge import MMROLE_RUBRIC

    return "\n".join(f"{i}. {d.title}: fine. [Scores]: {pair}" for i, d in enumerate(MMROLE_RUBRIC.dimensions, 1))


def out_of_scale(pair):
    def run(ctx):
        _, rewards, logged = judge_with([all_dimensions("(6, 8)"), all_dimensions(pair), all_dimensions("(8, 8)")])
        assert rewards == [0.75, 0.875, 1.0]  # the failed one gets the batch mean of the two others
        assert logged["judge/out_of_scale"] == 8.0
        return Outcome(int(logged["judge/parse_errors"]))

    return run


def pcog_without_evalhelp(ctx):
    info = {"ImageDesc": "a room", "location": "Home", "EvalHelp": "be kind"}
    columns = {
        "reference": ["r"] * 3,
        "role_set": ["a Father at Home"] * 3,
        "eval_info": [info, {"ImageDesc": "a room", "location": "Home"}, info],
        "id": ["p0", "p1", "p2"],
    }
    from trl_latent.rewards.judge import PCOGALIGN_RUBRIC

    answer = "\n".join(f"{d.title}: [Scores]: (5, 5)" for d in PCOGALIGN_RUBRIC.dimensions)
    _, rewards, logged = judge_with([answer, answer], rubric="pcogalign", **columns)
    assert rewards == [1.0, 1.0, 1.0] and logged["judge/requests"] == 2.0
    return Outcome(int(logged["judge/bad_records"]))


def backend_error_with_key(ctx):
    def failing(messages):
        raise RuntimeError(f"401 from server: invalid key {KEY}")

    judge = JudgeReward("mmrole", failing, max_retries=1, backoff=0.0, check_connection=False)
    logged = {}
    judge(["q"] * 3, ["a"] * 3, log_metric=lambda k, v: logged.__setitem__(k, v), **MMROLE_COLUMNS)
    assert KEY not in repr(judge)
    # The docs' judge/requests, judge/judgements and judge/retries are logged each batch.
    assert logged["judge/requests"] == 6.0 and logged["judge/retries"] == 3.0 and logged["judge/judgements"] == 3.0
    return Outcome(int(logged["judge/request_errors"]))  # 3 completions x 2 attempts


def judge_answering(status: int, body: dict):
    """Build a JudgeReward against a local OpenAI-compatible server that answers every chat request with `status` and
    `body` (the start-up test judgement included); the key is read from JUDGE_API_KEY."""

    def run(ctx):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # models.list(): reachable
                self._send(200, {"object": "list", "data": [{"id": "served-judge", "object": "model"}]})

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._send(status, body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            JudgeReward("mmrole", OpenAIJudgeBackend(url, "judge", api_key_env="JUDGE_API_KEY", timeout=5.0))
        finally:
            server.shutdown()
            server.server_close()

    return run


def chat_answer(text: str) -> dict:
    message = {"role": "assistant", "content": text}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "judge",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip


def collator_truncated_image(ctx, skip):
    image = ctx.dir / "half.png"
    Image.new("RGB", (64, 64), "blue").save(image)
    truncate_file(image)
    record = {
        "id": "img1",
        "paired_index": 0,
        "images": [str(image)],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A picture."}]},
        ],
    }
    good = dict(record, id="img2", paired_index=1, images=[Image.new("RGB", (56, 56))])
    collator = LatentDataCollator(ctx.shared["processor"], skip_bad_records=skip)
    batch = collator([record, good])
    return Outcome(int(batch["skipped_records"]))


# ------------------------------------------------------------------------------------------------ the table
CASES = [
    # --- pretraining files
    Case("pretrain/no_files", lambda c: load_pretrain_corpus([]), ValueError, ("got no file",)),
    Case(
        "pretrain/empty_json",
        lambda c: load_pretrain_corpus(write(c, "p.json", "")),
        DataFileError,
        ("{dir}/p.json is empty", "JSON list of records"),
    ),
    Case(
        "pretrain/truncated_json",
        lambda c: load_pretrain_corpus(write(c, "p.json", truncated([TEXT_RECORD, TEXT_RECORD]))),
        DataFileError,
        ("{dir}/p.json is not valid JSON", "looks truncated", "fetch it again"),
    ),
    Case(
        "pretrain/not_utf8",
        lambda c: load_pretrain_corpus(write(c, "p.json", json.dumps([TEXT_RECORD]).encode("utf-16"))),
        DataFileError,
        ("{dir}/p.json is not UTF-8", "Save it as UTF-8"),
    ),
    Case(
        "pretrain/empty_jsonl",
        lambda c: load_pretrain_corpus(write(c, "p.jsonl", "\n\n")),
        DataFileError,
        ("{dir}/p.jsonl is empty",),
    ),
    Case(
        "pretrain/bad_jsonl_line",
        lambda c: load_pretrain_corpus(write(c, "p.jsonl", json.dumps(TEXT_RECORD) + "\n{not json\n")),
        DataFileError,
        ("{dir}/p.jsonl line 2 is not valid JSON", "skip_bad_records=True"),
    ),
    Case(
        "pretrain/bad_jsonl_line_skipped",
        lambda c: pretrain_skip(c, json.dumps(TEXT_RECORD) + "\n{not json\n" + json.dumps(TEXT_RECORD) + "\n"),
        fragments=("corpus.jsonl line 2 is not valid JSON",),
        count=1,
    ),
    Case(
        "pretrain/record_not_an_object",
        lambda c: load_pretrain_corpus(write(c, "p.json", json.dumps([TEXT_RECORD, 7]))),
        BadRecordError,
        ("pretraining record row 1 of {dir}/p.json is a int, not a record object",),
    ),
    Case(
        "pretrain/record_not_an_object_skipped",
        lambda c: pretrain_skip(c, json.dumps([TEXT_RECORD, 7]), "p.json"),
        fragments=("row 1 of", "not a record object"),
        count=1,
    ),
    Case(
        "pretrain/message_without_role",
        lambda c: load_pretrain_corpus(write(c, "p.json", json.dumps([{"id": "m1", "messages": [{"content": "x"}]}]))),
        BadRecordError,
        ("id='m1', row 0 of {dir}/p.json: message 0 must be an object with a `role`",),
    ),
    Case(
        "pretrain/content_not_a_string",
        lambda c: load_pretrain_corpus(
            write(c, "p.json", json.dumps([{"id": "m2", "messages": [{"role": "user", "content": [1]}]}]))
        ),
        BadRecordError,
        ("id='m2'", "message 0 (user) must have a string `content`"),
    ),
    Case(
        "pretrain/instance_type_of_mixed_types",
        lambda c: load_pretrain_corpus(
            write(c, "p.json", json.dumps([TEXT_RECORD, {**TEXT_RECORD, "instance_type": 3}]))
        ),
        BadRecordError,
        ("row 1 of {dir}/p.json: `instance_type` must be a string",),
    ),
    Case(
        "pretrain/truncated_image_in_batch",
        lambda c: collator_truncated_image(c, skip=False),
        BadRecordError,
        ("paired record id='img1', row 0: image", "cannot be read"),
    ),
    Case(
        "pretrain/truncated_image_in_batch_skipped",
        lambda c: collator_truncated_image(c, skip=True),
        fragments=("id='img1'", "cannot be read"),
        count=1,
    ),
    # --- MMRole files, sessions, images
    Case(
        "mmrole/empty_dialogue_file",
        lambda c: load_mmrole(damage_dialogues(c, b"")),
        MMRoleFormatError,
        ("Black_Panther_COCO.json is empty", "JSON list of sessions"),
    ),
    Case(
        "mmrole/truncated_dialogue_file",
        lambda c: load_mmrole(damage_dialogues(c, truncated([{"id": "a", "conversations": []}] * 3).encode())),
        MMRoleFormatError,
        ("MMRole dialogue file {dir}/mmrole/dialogues/in-distribution/comment/Black_Panther_COCO.json", "truncated"),
    ),
    Case(
        "mmrole/non_utf8_dialogue_file",
        lambda c: load_mmrole(damage_dialogues(c, "[]".encode("utf-16"))),
        MMRoleFormatError,
        ("Black_Panther_COCO.json is not UTF-8",),
    ),
    Case(
        "mmrole/session_of_wrong_type",
        lambda c: load_mmrole(damage_dialogues(c, b'["a session"]')),
        MMRoleFormatError,
        ("Black_Panther_COCO.json (session 0): a session must be an object, got str",),
    ),
    Case(
        "mmrole/misspelled_conversations_key",
        lambda c: Outcome(
            mmrole_stats(
                add_session(c, {"id": "typo", "image": "x.jpg", "conversation": [{"from": "human", "value": "?"}]})
            ).misnamed_sessions
        ),
        fragments=("1 session(s) whose turns are under a misspelled key", "'typo'", "'conversation'"),
        count=1,
    ),
    Case(
        "mmrole/misspelled_conversations_key_strict",
        lambda c: load_mmrole(
            add_session(c, {"id": "typo", "image": "x.jpg", "conversation": []}), image_size=(8, 8), strict=True
        ),
        MMRoleFormatError,
        ("session 'typo'", "under 'conversation', not 'conversations'"),
    ),
    Case(
        "mmrole/session_without_answer",
        lambda c: Outcome(
            mmrole_stats(
                add_session(c, {"id": "q_only", "image": "x.jpg", "conversations": [{"from": "human", "value": "?"}]})
            ).unanswered_sessions
        ),
        fragments=("skipped 1 in-distribution session(s) without a character answer", "'q_only'", "strict=True"),
        count=1,
    ),
    Case(
        "mmrole/truncated_image",
        lambda c: load_mmrole(mmrole_with_truncated_image(c), image_size=(8, 8)),
        MMRoleFormatError,
        ("cannot be read", "of session 'Albus_Dumbledore", "images/COCO", "on_missing_image='skip'"),
    ),
    Case(
        "mmrole/truncated_image_skipped",
        lambda c: Outcome(mmrole_stats(mmrole_with_truncated_image(c), on_missing_image="skip").unreadable_images),
        fragments=("1 with an unreadable one",),
        count=1,
    ),
    Case(
        "mmrole/ood_split_alone_without_its_file",
        lambda c: load_mmrole(mmrole_root(c), splits=("ood_test",)),
        FileNotFoundError,
        ("ood_test split needs the out-of-distribution dialogues", "dialogues/out-of-distribution/comment.json"),
    ),
    # --- PCogAlignBench files and images
    Case(
        "pcogalign/empty_file",
        lambda c: load_pcogalign(pcog_root(c, ""), splits=("ls2_test",)),
        PCogAlignFormatError,
        ("HCSHR-golden-test.json is empty",),
    ),
    Case(
        "pcogalign/truncated_file",
        lambda c: load_pcogalign(pcog_root(c, truncated([pcog_record()] * 2)), splits=("ls2_test",)),
        PCogAlignFormatError,
        ("{dir}/pcog/HCSHR-golden-test.json is not valid JSON", "truncated"),
    ),
    Case(
        "pcogalign/bad_jsonl_line",
        lambda c: load_pcogalign(pcog_root(c, json.dumps(pcog_record()) + "\n{\n", ".jsonl"), splits=("ls2_test",)),
        PCogAlignFormatError,
        ("HCSHR-golden-test.jsonl line 2 is not valid JSON",),
    ),
    Case(
        "pcogalign/truncated_image_skipped",
        pcog_truncated_image_skipped,
        fragments=("cannot be read",),
        count=2,
    ),
    # --- saved models and checkpoints
    Case(
        "model/truncated_safetensors",
        lambda c: load_saved(f) if truncate_file((f := saved_model(c)) / "model.safetensors") else None,
        ValueError,
        ("{dir}/saved/model.safetensors cannot be read", "truncated or corrupt"),
    ),
    Case(
        "model/truncated_shard",
        lambda c: load_saved(f) if truncate_file(first_shard(f := saved_model(c, shards=True))) else None,
        ValueError,
        ("{dir}/saved/model-00001-of-", "truncated or corrupt"),
    ),
    Case(
        "model/missing_shard",
        lambda c: load_saved(f) if first_shard(f := saved_model(c, shards=True)).unlink() is None else None,
        FileNotFoundError,
        ("{dir}/saved/model-00001-of-", "is missing (a shard named in model.safetensors.index.json)"),
    ),
    Case(
        "model/no_config_json",
        lambda c: load_saved(f) if (f := saved_model(c)).joinpath("config.json").unlink() is None else None,
        FileNotFoundError,
        ("{dir}/saved has no config.json", "not a saved latent model"),
    ),
    Case(
        "model/base_folder_moved",
        moved_base,
        FileNotFoundError,
        ("{dir}/old_place/base, which does not exist (moved or deleted?)", "base_model=", "base_model_name_or_path"),
    ),
    # --- checkpoints left by a run killed while saving
    Case(
        "checkpoint/no_trainer_state_skipped_by_resume_true",
        lambda c: resume_true_skips(c, lambda folder: (folder / "trainer_state.json").unlink()),
        fragments=("Not resuming from {dir}/run/checkpoint-2", "trainer_state.json is missing"),
        count=1,
    ),
    Case(
        "checkpoint/weights_cut_short_skipped_by_resume_true",
        lambda c: resume_true_skips(c, lambda folder: truncate_file(folder / "model.safetensors")),
        fragments=("Not resuming from {dir}/run/checkpoint-2", "model.safetensors cannot be read", "cut short"),
        count=1,
    ),
    Case(
        "checkpoint/optimizer_cut_short",
        lambda c: resume_explicit(c, "optimizer.pt"),
        CheckpointError,
        (
            "Cannot resume from {dir}/run/checkpoint-2: {dir}/run/checkpoint-2/optimizer.pt cannot be read",
            "cut short",
            "earlier checkpoint",
        ),
    ),  # fmt: skip
    Case(
        "checkpoint/scheduler_cut_short",
        lambda c: resume_explicit(c, "scheduler.pt"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/scheduler.pt cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/rng_state_cut_short",
        lambda c: resume_explicit(c, "rng_state*.pth"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/rng_state", ".pth cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/weights_cut_short",
        lambda c: resume_explicit(c, "model.safetensors"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/model.safetensors cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/none_complete_with_resume_true",
        no_complete_checkpoint,
        FileNotFoundError,
        (
            "resume_from_checkpoint=True, but no checkpoint in {dir}/run is complete",
            "checkpoint-2 ({dir}/run/checkpoint-2/trainer_state.json is missing",
            "checkpoint-1 ({dir}/run/checkpoint-1/model.safetensors cannot be read",
            "without resume_from_checkpoint",
        ),
    ),  # fmt: skip
    # --- training data
    Case(
        "sft/empty_dataset",
        lambda c: train_on_empty(c, "sft"),
        ValueError,
        ("The paired (train) dataset is empty",),
    ),
    Case(
        "grpo/empty_dataset",
        lambda c: train_on_empty(c, "grpo"),
        ValueError,
        ("train_dataset is empty",),
    ),
    # --- judge: scores, records, secrets, metrics
    Case("judge/score_below_scale", out_of_scale("(7, 0)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/score_above_scale", out_of_scale("(11, 5)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/negative_score", out_of_scale("(-3, 4)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/nan_score", out_of_scale("(NaN, 5)"), fragments=("outside the 1-10 scale",), count=1),
    Case(
        "judge/pcogalign_record_without_evalhelp",
        pcog_without_evalhelp,
        fragments=("record id='p1'", "missing field 'EvalHelp'"),
        count=1,
    ),
    Case(
        "judge/key_passed_as_env_name",
        lambda c: OpenAIJudgeBackend("http://localhost:1/v1", "judge", api_key_env=KEY),
        ValueError,
        ("api_key_env must be the NAME of the environment variable", "looks like a key itself"),
    ),
    Case("judge/backend_error_quotes_the_key", backend_error_with_key, fragments=("invalid key ***",), count=6),
    # --- judge: the start-up test judgement (a real request) refused or unreadable
    Case(
        "judge/start_up_key_rejected",
        judge_answering(401, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_api_key"}}),
        JudgeCheckError,
        (
            "refused the start-up test judgement",
            "HTTP 401 Unauthorized: Incorrect API key provided: ***",
            "valid key in the environment variable JUDGE_API_KEY",
            "check_connection=False",
        ),
    ),  # fmt: skip
    Case(
        "judge/start_up_no_permission",
        judge_answering(403, {"error": {"message": "You are not allowed to sample from this model"}}),
        JudgeCheckError,
        ("HTTP 403 Forbidden: You are not allowed to sample from this model", "not allowed to use model 'judge'"),
    ),
    Case(
        "judge/start_up_unknown_model",
        judge_answering(404, {"object": "error", "message": "The model `judge` does not exist.", "code": 404}),
        JudgeCheckError,
        (
            "HTTP 404 Not Found: The model `judge` does not exist",
            "has no model 'judge'",
            "The server lists: ['served-judge']",
            "Fix judge_model (--judge_model)",
        ),
    ),  # fmt: skip
    Case(
        "judge/start_up_unreadable_answer",
        judge_answering(200, chat_answer("Both responses are lovely; I would not want to rank them.")),
        JudgeCheckError,
        ("no score pair could be read from its answer", "I would not want to rank them", "[Scores]: (A, B)"),
    ),
]


@pytest.fixture(scope="module")
def shared(tiny_cache):
    import torch

    from trl_latent.experiments.shapes.models import tiny_vlm, tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    torch.manual_seed(0)
    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(path, codebook_size=8, inverse_layers=1, policy_layers=1)
    return {"model": model, "processor": tiny_vlm("tiny", cache_dir=tiny_cache)[1]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, shared, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    ctx = Ctx(tmp_path, shared)
    fragments = [f.replace("{dir}", str(tmp_path)) for f in case.fragments]
    caplog.set_level(logging.WARNING)
    if case.error is not None:
        with pytest.raises(case.error) as info:
            case.run(ctx)
        message = str(info.value)
        missing = [f for f in fragments if f not in message]
        assert not missing, f"{missing} not in: {message}"
        assert all(secret not in message for secret in case.absent)
    else:
        outcome = case.run(ctx)
        assert outcome.count == case.count
        logs = caplog.text
        missing = [f for f in fragments if f not in logs]
        assert not missing, f"{missing} not in the warnings: {logs}"
    assert all(secret not in caplog.text for secret in case.absent)
