"""MMRole loader on the real sample (images made here), the synthetic task, and bad input."""

import json
import random
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.bad_input import (
    Case,
    Outcome,
    add_session,
    bad_input_test,
    damage_dialogues,
    mmrole_sample_root,
    mmrole_stats,
    mmrole_with_truncated_image,
)
from tests.fixtures.paths import TEST_DATA
from trl_latent.data.mmrole import (
    PAPER_SYSTEM_PROMPT,
    PROFILE_FIELDS,
    MMRoleFormatError,
    build_mmrole_prompt,
    fraction_bounds,
    load_mmrole,
    to_sft,
)

SAMPLE = TEST_DATA / "mmrole-sample"
COMMENT = "dialogues/in-distribution/comment"


def make_images(root: Path) -> None:
    for path in sorted((root / COMMENT).glob("*.json")):
        for session in json.loads(path.read_text()):
            target = root / "images" / session["image"]
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 48), "red").save(target)


@pytest.fixture
def mmrole_root(tmp_path):
    if not SAMPLE.is_dir():
        pytest.fail(f"The MMRole sample is missing at {SAMPLE}.")
    root = tmp_path / "mmrole"
    shutil.copytree(SAMPLE, root)
    make_images(root)
    return root


def user_text(row) -> str:
    return row["prompt"][1]["content"][1]["text"]


def test_real_sample_splits_prompts_and_columns(mmrole_root):
    splits, stats = load_mmrole(mmrole_root, image_size=(32, 24), return_stats=True)
    assert sorted(splits) == ["id_test", "rl", "sft"]  # the sample has no OOD file
    assert stats.sessions == 36 and stats.files == 6 and stats.empty_sessions == 0
    # 36 sessions: floor(0.5 * 36) = 18, floor(0.9 * 36) = 32.
    assert {name: len(ds) for name, ds in splits.items()} == {"sft": 18, "rl": 14, "id_test": 4}

    # The split is the seed-42 shuffle of the sessions in sorted file order (authors' `random.seed(42); shuffle`).
    ids = [s["id"] for p in sorted((mmrole_root / COMMENT).glob("*.json")) for s in json.loads(p.read_text())]
    random.seed(42)
    random.shuffle(ids)
    assert splits["sft"]["id"] == ids[:18] and splits["rl"]["id"] == ids[18:32] and splits["id_test"]["id"] == ids[32:]

    sessions = {s["id"]: s for p in (mmrole_root / COMMENT).glob("*.json") for s in json.loads(p.read_text())}
    for row in splits["sft"]:
        session = sessions[row["id"]]
        name = row["character"]
        question, answer = session["conversations"][0]["value"], session["conversations"][1]["value"]
        profile = json.loads(
            (mmrole_root / "profiles/in-distribution/detailed_profiles" / f"{name.replace(' ', '_')}.json").read_text()
        )
        assert row["reference"] == answer and row["question"] == question
        assert row["profile"] == {k: profile[k] for k in PROFILE_FIELDS}
        assert row["image"].size == (32, 24) and row["image"].mode == "RGB"
        assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": PAPER_SYSTEM_PROMPT}]}
        assert row["prompt"][1]["role"] == "user" and row["prompt"][1]["content"][0]["type"] == "image"
        text = user_text(row)
        # The paper's order: name sentence, five labelled fields, history, instruction, question, `[<name>]: `.
        marks = [
            f"Please step into the shoes of {name}.",
            "talking with a curious human about the given image",
            f"- Introduction: {profile['introduction']}",
            f"- Personality: {profile['personality']}",
            f"- Experience: {profile['experience']}",
            f"- Relationship: {profile['relationship']}",
            f"- Catchphrase: {profile['catchphrase']}",
            f"The conversation history between {name} and the curious human",
            f"Please embody the given character of {name} and complete the following conversation.",
            f"[human]: {question}",
        ]
        positions = [text.index(mark) for mark in marks]
        assert positions == sorted(positions)
        assert text.endswith(f"\n[{name}]: ")


def test_mmrole_eval_template_reproduces_the_released_record():
    record = json.loads((SAMPLE / "eval-example" / "comment_test_example.json").read_text())[0]
    expected = record["conversations"][0]["value"]
    description = expected.split("is as follows:\n", 1)[1].split("\n\n\nPlease respond", 1)[0]
    sections = re.split(r"^### .*\n", description, flags=re.M)[1:]
    profile = dict(zip(PROFILE_FIELDS, (s.rstrip("\n") for s in sections)))
    question = expected.rsplit("\n", 1)[1]
    prompt = build_mmrole_prompt(record["role"], profile, question, template="mmrole_eval", script=record["script"])
    assert prompt[0]["content"][0]["text"] == record["system"]
    assert prompt[1]["content"][1]["text"] == expected


def test_eval_template_from_loader_is_built_as_the_released_records(mmrole_root):
    """As MMRole's evaluation records: the short profile of profiles.json verbatim, the work named in roles.json."""
    folder = mmrole_root / "profiles/in-distribution"
    short = json.loads((folder / "profiles.json").read_text())
    splits = load_mmrole(mmrole_root, image_size=(16, 16), template="mmrole_eval", splits=("sft",))
    by_name = {row["character"]: user_text(row) for row in splits["sft"]}
    assert set(by_name) == set(short)
    for name, text in by_name.items():
        assert f"The description of {name} is as follows:\n{short[name]}\n\n\nPlease respond" in text
    assert "shoes of Albus Dumbledore from Harry Potter." in by_name["Albus Dumbledore"]
    assert "shoes of Black Panther from The Avengers." in by_name["Black Panther"]
    assert "shoes of Aisha Al-Farsi from Hypothetical Characters." in by_name["Aisha Al-Farsi"]
    # Without the released files: the detailed profile's sections and the script of the image folders.
    (folder / "profiles.json").unlink()
    (folder / "roles.json").unlink()
    splits = load_mmrole(mmrole_root, image_size=(16, 16), template="mmrole_eval", splits=("sft",))
    by_name = {row["character"]: user_text(row) for row in splits["sft"]}
    assert "shoes of Albus Dumbledore from Harry Potter." in by_name["Albus Dumbledore"]
    assert "shoes of Aisha Al-Farsi. Imagine" in by_name["Aisha Al-Farsi"]  # hypothetical: no script folder
    assert "### Life Story" in by_name["Black Panther"]


def test_sft_form_and_trl_placeholders(mmrole_root):
    from trl.data_utils import prepare_multimodal_messages

    sft = to_sft(load_mmrole(mmrole_root, image_size=(16, 16), splits=("sft",))["sft"])
    row = sft[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][-1]["content"] == [{"type": "text", "text": row["reference"]}]
    assert len(row["images"]) == 1 and row["images"][0].size == (16, 16)
    filled = prepare_multimodal_messages(row["messages"], row["images"])  # exactly one placeholder per image
    assert filled[1]["content"][0]["image"] is row["images"][0]


def test_missing_image_error_or_skip_and_count(mmrole_root):
    missing = "COCO/train2017/000000435579.jpg"
    (mmrole_root / "images" / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mmrole(mmrole_root, image_size=(16, 16))
    assert missing in str(info.value) and str(mmrole_root / "images") in str(info.value)
    assert "on_missing_image='skip'" in str(info.value)
    splits, stats = load_mmrole(mmrole_root, image_size=(16, 16), on_missing_image="skip", return_stats=True)
    assert stats.missing_images == 1
    assert sum(len(ds) for ds in splits.values()) == 35
    # 35 sessions: floor(17.5) = 17, floor(31.5) = 31.
    assert [len(splits[k]) for k in ("sft", "rl", "id_test")] == [17, 14, 4]
    with pytest.raises(ValueError, match="on_missing_image"):
        load_mmrole(mmrole_root, on_missing_image="ignore")


def test_empty_sessions_are_skipped_and_counted(mmrole_root):
    path = mmrole_root / COMMENT / "Black_Panther_COCO.json"
    sessions = json.loads(path.read_text())
    sessions.append({"id": "Black_Panther_comment_COCO_empty", "image": "COCO/none.jpg", "conversations": []})
    path.write_text(json.dumps(sessions))
    splits, stats = load_mmrole(mmrole_root, image_size=(16, 16), return_stats=True)
    assert stats.empty_sessions == 1 and stats.sessions == 37
    assert sum(len(ds) for ds in splits.values()) == 36


def test_ood_file_and_other_dialogue_types(mmrole_root):
    ood_profiles = mmrole_root / "profiles/out-of-distribution/detailed_profiles"
    ood_profiles.mkdir(parents=True)
    profile = {k: f"{k} of Iron Man" for k in PROFILE_FIELDS}
    (ood_profiles / "Iron_Man.json").write_text(json.dumps(profile))
    ood = [
        {
            "id": f"Iron_Man_comment_COCO_{i}",
            "image": "COCO/train2017/000000435579.jpg",
            "conversations": [{"from": "human", "value": f"Question {i}?"}, {"role": "Iron Man", "value": f"A{i}"}],
        }
        for i in range(3)
    ]
    (mmrole_root / "dialogues/out-of-distribution").mkdir()
    (mmrole_root / "dialogues/out-of-distribution/comment.json").write_text(json.dumps(ood))
    # A multi-turn human-role dialogue (speaker key `role` throughout), read only when asked for.
    human_role = mmrole_root / "dialogues/in-distribution/human-role"
    human_role.mkdir()
    turns = [("human", "Hello?"), ("Black Panther", "Greetings."), ("human", "And now?"), ("Black Panther", "Now.")]
    session = {
        "id": "Black_Panther_human-role_0",
        "image": "COCO/train2017/000000435579.jpg",
        "conversations": [{"role": s, "value": v} for s, v in turns],
    }
    (human_role / "Black_Panther_COCO.json").write_text(json.dumps([session]))

    splits = load_mmrole(mmrole_root, image_size=(16, 16))
    assert len(splits["ood_test"]) == 3 and set(splits["ood_test"]["distribution"]) == {"out"}
    assert splits["ood_test"][0]["profile"] == profile and splits["ood_test"][0]["reference"] == "A0"
    assert "human-role" not in {t for ds in splits.values() for t in ds["dialogue_type"]}

    splits, stats = load_mmrole(
        mmrole_root, image_size=(16, 16), dialogue_types=("comment", "human-role"), splits=("sft", "rl", "id_test"),
        return_stats=True,
    )  # fmt: skip
    assert stats.sessions == 37 and stats.samples == 38  # the human-role session gives two samples
    rows = [r for ds in splits.values() for r in ds if r["dialogue_type"] == "human-role"]
    assert sorted(r["reference"] for r in rows) == ["Greetings.", "Now."]
    second = next(r for r in rows if r["reference"] == "Now.")
    assert (
        second["history"] == "[human]: Hello?\n[Black Panther]: Greetings." and second["question_speaker"] == "human"
    )
    text = user_text(second)
    assert "[human]: Hello?\n[Black Panther]: Greetings.\n\nPlease embody" in text
    assert text.endswith("[human]: And now?\n[Black Panther]: ")


def test_fraction_bounds_rounding():
    assert fraction_bounds(36, 0.5, 0.9) == (18, 32)
    assert fraction_bounds(7, 0.0, 0.5) == (0, 3) and fraction_bounds(7, 0.9, 1.0) == (6, 7)
    assert fraction_bounds(100, 0.0, 0.29) == (0, 29)  # int(0.29 * 100) would give 28
    assert fraction_bounds(0, 0.5, 0.9) == (0, 0)
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        fraction_bounds(10, 0.9, 0.5)


def test_bad_input_errors(mmrole_root):
    (mmrole_root / "profiles/in-distribution/detailed_profiles/Black_Panther.json").unlink()
    with pytest.raises(MMRoleFormatError, match=r"No profile for character 'Black Panther'.*Black_Panther\.json"):
        load_mmrole(mmrole_root, image_size=(16, 16))

    path = mmrole_root / COMMENT / "Albus_Dumbledore_COCO.json"
    path.write_text(json.dumps({"id": "x", "conversations": []}))
    with pytest.raises(MMRoleFormatError, match=r"Albus_Dumbledore_COCO\.json must hold a JSON list.*dict"):
        load_mmrole(mmrole_root, image_size=(16, 16))

    path.write_text(
        json.dumps([{"id": "q_only", "image": "a.jpg", "conversations": [{"from": "human", "value": "Hi"}]}])
    )
    with pytest.raises(MMRoleFormatError, match="'q_only'.*no reference answer.*strict=True"):
        load_mmrole(mmrole_root, image_size=(16, 16), strict=True)

    path.write_text(json.dumps([{"id": "nokey", "image": "a.jpg", "conversations": [{"value": "Hi"}]}]))
    with pytest.raises(MMRoleFormatError, match="neither a 'from' nor a 'role'"):
        load_mmrole(mmrole_root, image_size=(16, 16))

    with pytest.raises(FileNotFoundError, match="dialogues"):
        load_mmrole(mmrole_root / "images", image_size=(16, 16))
    with pytest.raises(ValueError, match="Unknown MMRole prompt template"):
        load_mmrole(mmrole_root, template="chatml")


def test_synthetic_task_loads(tmp_path):
    from trl_latent.experiments.shapes.scenes import CHARACTERS, OOD_CHARACTERS
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    manifest = write_synthetic_task(tmp_path / "shapes", sessions_per_file=5, ood_sessions_per_character=2)
    splits, stats = load_mmrole(tmp_path / "shapes", image_size=(56, 56), return_stats=True)
    n = manifest.counts["id_sessions"]
    assert n == 5 * 2 * len(CHARACTERS) and stats.sessions == n + manifest.counts["ood_sessions"]
    assert [len(splits[k]) for k in ("sft", "rl", "id_test")] == [n // 2, int(0.9 * n) - n // 2, n - int(0.9 * n)]
    assert len(splits["ood_test"]) == 2 * len(OOD_CHARACTERS)
    assert set(splits["ood_test"]["character"]) == set(OOD_CHARACTERS)
    row = splits["sft"][0]
    name = row["character"]
    assert name in CHARACTERS and row["profile"]["catchphrase"] == CHARACTERS[name]["catchphrase"]
    text = user_text(row)
    assert f"shoes of {name}" in text and f"[human]: {row['question']}" in text and text.endswith(f"[{name}]: ")


def test_sft_form_trains_with_stock_trl(tiny_cache, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from tests.fixtures.models import tiny_vlm
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    write_synthetic_task(tmp_path / "shapes", sessions_per_file=1, ood_sessions_per_character=1)
    dataset = to_sft(load_mmrole(tmp_path / "shapes", image_size=(56, 56), splits=("sft",))["sft"])
    # One session per file: 4 records, one batch, so every step's loss is measured on the same records.
    assert len(dataset) == 4
    model, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=5,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        assistant_only_loss=True,
        max_length=None,
        disable_tqdm=True,
        seed=0,
    )
    trainer = SFTTrainer(model=model, processing_class=processor, args=args, train_dataset=dataset)
    batch = next(iter(trainer.get_train_dataloader()))
    # Assistant-only loss: the labelled tokens are exactly the reference answers (plus the end-of-turn token).
    labelled = [
        processor.tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"])
    ]
    assert all(any(text.startswith(ref) for ref in dataset["reference"]) for text in labelled)
    trainer.train()
    # The model learns the reference answers: the loss falls at every step (measured: 6.082 -> 5.906 -> 5.786 -> 5.701
    # -> 5.645; the untrained tiny VLM starts near log(454 tokens) = 6.12).
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 5
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[0] - losses[-1] > 0.3, losses


# --------------------------------------------------------------------------------------------------- the real release
@pytest.fixture
def release_root(mmrole_root):
    """The sample with the quirks of the real MMRole release: sessions holding only a human turn (no reference) in
    two of the files, and an out-of-distribution split with its own profiles, profiles.json and roles.json."""
    for name in ("Black_Panther_COCO.json", "Albus_Dumbledore_script.json"):
        path = mmrole_root / COMMENT / name
        sessions = json.loads(path.read_text())
        human_only = {
            "id": f"{path.stem}_q",
            "image": sessions[0]["image"],
            "conversations": sessions[0]["conversations"][:1],
        }
        path.write_text(json.dumps([*sessions, human_only]))
    ood = mmrole_root / "profiles/out-of-distribution"
    (ood / "detailed_profiles").mkdir(parents=True)
    (ood / "detailed_profiles/Howard_Wolowitz.json").write_text(
        json.dumps({k: f"{k} of Howard" for k in PROFILE_FIELDS})
    )
    (ood / "profiles.json").write_text(json.dumps({"Howard Wolowitz": "### Howard\nAn engineer at Caltech."}))
    (ood / "roles.json").write_text(json.dumps({"The Big Bang Theory": ["Howard Wolowitz"]}))
    sessions = [
        {
            "id": f"Howard_Wolowitz_comment_{i}",
            "image": "COCO/train2017/000000435579.jpg",
            "conversations": [
                {"from": "human", "value": f"What is this {i}?"},
                {"from": "Howard Wolowitz", "value": f"A{i}"},
            ],
        }
        for i in range(2)
    ]
    sessions.append({"id": "Howard_Wolowitz_comment_q", "image": "COCO/train2017/000000435579.jpg",
                     "conversations": [{"from": "human", "value": "Anyone?"}]})  # fmt: skip
    (mmrole_root / "dialogues/out-of-distribution").mkdir(parents=True)
    (mmrole_root / "dialogues/out-of-distribution/comment.json").write_text(json.dumps(sessions))
    return mmrole_root


def test_release_sessions_without_answer_are_skipped_with_one_warning(release_root, caplog):
    caplog.set_level("WARNING")
    splits, stats = load_mmrole(release_root, image_size=(16, 16), return_stats=True)
    assert stats.unanswered_sessions == 3 and stats.sessions == 36 + 2 + 3
    assert {name: len(ds) for name, ds in splits.items()} == {"sft": 18, "rl": 14, "id_test": 4, "ood_test": 2}
    warnings = [r.getMessage() for r in caplog.records if "without a character answer" in r.getMessage()]
    # One warning per distribution read (in: 2 sessions in 2 files; out: 1), each naming a session and the switch.
    assert len(warnings) == 2 and "skipped 2 in-distribution" in warnings[0] and "strict=True" in warnings[0]
    with pytest.raises(
        MMRoleFormatError,
        match=r"Albus_Dumbledore_script\.json \(session 'Albus_Dumbledore_script_q'\).*no reference answer",
    ):
        load_mmrole(release_root, image_size=(16, 16), strict=True)


def test_release_each_split_loads_alone(release_root):
    ood = load_mmrole(release_root, image_size=(16, 16), splits=("ood_test",))
    assert list(ood) == ["ood_test"] and ood["ood_test"]["reference"] == ["A0", "A1"]
    # The OOD test set needs nothing of the in-distribution part, and the ID splits nothing of the OOD part.
    shutil.rmtree(release_root / "dialogues/in-distribution")
    assert len(load_mmrole(release_root, image_size=(16, 16), splits=("ood_test",))["ood_test"]) == 2
    with pytest.raises(FileNotFoundError, match="in-distribution"):
        load_mmrole(release_root, image_size=(16, 16), splits=("sft",))


def test_release_ood_eval_prompt_names_the_work(release_root):
    ood = load_mmrole(release_root, image_size=(16, 16), splits=("ood_test",), template="mmrole_eval")["ood_test"]
    text = user_text(ood[0])
    assert text.startswith("Please step into the shoes of Howard Wolowitz from The Big Bang Theory. Imagine")
    assert "The description of Howard Wolowitz is as follows:\n### Howard\nAn engineer at Caltech.\n\n\n" in text
    assert text.endswith("vocabulary of Howard Wolowitz:\nWhat is this 0?")


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
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
        "mmrole/truncated_image_skipped",
        lambda c: Outcome(mmrole_stats(mmrole_with_truncated_image(c), on_missing_image="skip").unreadable_images),
        fragments=("1 with an unreadable one",),
        count=1,
    ),
    Case(
        "mmrole/ood_split_alone_without_its_file",
        lambda c: load_mmrole(mmrole_sample_root(c), splits=("ood_test",)),
        FileNotFoundError,
        ("ood_test split needs the out-of-distribution dialogues", "dialogues/out-of-distribution/comment.json"),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT)
