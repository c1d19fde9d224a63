"""PCogAlignBench loader on records built here with the documented fields."""

import json
import random

import pytest
from PIL import Image

from trl_latent.data.mmrole import to_sft
from trl_latent.data.pcogalign import (
    PCogAlignFormatError,
    load_pcogalign,
    pcogalign_system_prompt,
    read_pcogalign_records,
)


def record(i: int, subset: str) -> dict:
    return {
        "id": f"{subset}-{i}",
        "individual_RoleSet": {"Home": "a Father", "Community": "a Fireman", "Workplace": f"an Engineer {i}"},
        "query": f"What should I do now? ({i})",
        "image": {"file_path": f"{subset}/images/{i}.jpg"},
        "eval_info": {"ImageDesc": f"scene {i}", "location": "Home", "EvalHelp": "Be practical and kind."},
        "golden_response": f"Golden answer {i}.",
    }


def write_bench(root, n_train=10, n_test=4, n_ls2=3, jsonl=False):
    files = {"HCMAS-golden-train": ("HCMAS", n_train), "HCMAS-golden-test": ("HCMAS", n_test)}
    files["HCSHR-golden-test"] = ("HCSHR", n_ls2)
    offset = 0
    for stem, (subset, n) in files.items():
        records = [record(offset + i, subset) for i in range(n)]
        offset += n
        for r in records:
            path = root / r["image"]["file_path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), "blue").save(path)
        if jsonl and stem.endswith("train"):
            (root / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            (root / f"{stem}.json").write_text(json.dumps(records))
    return root


def test_prompts_splits_and_columns(tmp_path):
    root = write_bench(tmp_path)
    splits, stats = load_pcogalign(root, image_size=(20, 16), return_stats=True)
    assert {k: len(v) for k, v in splits.items()} == {"sft": 5, "rl": 2, "ls1_test": 4, "ls2_test": 3}
    ids = [f"HCMAS-{i}" for i in range(10)]
    random.Random(42).shuffle(ids)
    assert splits["sft"]["id"] == ids[:5] and splits["rl"]["id"] == ids[5:7]
    assert set(splits["ls2_test"]["subset"]) == {"HCSHR"} and set(splits["ls1_test"]["subset"]) == {"HCMAS"}

    row = splits["ls1_test"][0]
    i = int(row["id"].split("-")[1])
    system = 'You are a helpful assistant for a user who is "a Father at Home; a Fireman at Community; an Engineer {} at Workplace".'
    assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": system.format(i)}]}
    assert row["prompt"][1]["content"] == [
        {"type": "image", "text": None},
        {"type": "text", "text": record(i, "")["query"]},
    ]
    assert row["reference"] == f"Golden answer {i}."
    assert row["role_set"] == f"a Father at Home; a Fireman at Community; an Engineer {i} at Workplace"
    assert row["eval_info"] == {"ImageDesc": f"scene {i}", "location": "Home", "EvalHelp": "Be practical and kind."}
    assert row["image"].size == (20, 16)
    sft = to_sft(splits["sft"])
    assert sft[0]["messages"][-1]["content"][0]["text"].startswith("Golden answer")


def test_jsonl_and_explicit_split_selection(tmp_path):
    root = write_bench(tmp_path, n_train=7, jsonl=True)
    splits = load_pcogalign(root, splits=("sft", "rl"), image_size=None)
    # 7 records: floor(3.5) = 3 SFT, floor(4.9) - 3 = 1 RL.
    assert len(splits["sft"]) == 3 and len(splits["rl"]) == 1
    assert splits["sft"][0]["image"].size == (40, 30)
    assert len(read_pcogalign_records(root / "HCMAS-golden-train.jsonl")) == 7


def test_missing_image_error_and_skip(tmp_path):
    root = write_bench(tmp_path)
    (root / "HCSHR/images/15.jpg").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_pcogalign(root, splits=("ls2_test",))
    assert "HCSHR/images/15.jpg" in str(info.value) and str(root) in str(info.value)
    splits, stats = load_pcogalign(root, splits=("ls2_test",), on_missing_image="skip", return_stats=True)
    assert len(splits["ls2_test"]) == 2 and stats["missing_images"] == 1


def test_bad_input(tmp_path):
    root = write_bench(tmp_path)
    records = json.loads((root / "HCMAS-golden-test.json").read_text())
    del records[2]["golden_response"]
    (root / "HCMAS-golden-test.json").write_text(json.dumps(records))
    with pytest.raises(PCogAlignFormatError, match="'HCMAS-12'.*no 'golden_response'"):
        load_pcogalign(root, splits=("ls1_test",))
    records[2]["golden_response"] = "ok"
    del records[1]["eval_info"]["EvalHelp"]
    (root / "HCMAS-golden-test.json").write_text(json.dumps(records))
    with pytest.raises(PCogAlignFormatError, match=r"'eval_info' lacks.*EvalHelp"):
        load_pcogalign(root, splits=("ls1_test",))
    (root / "HCMAS-golden-test.json").write_text(json.dumps({"records": records}))
    with pytest.raises(PCogAlignFormatError, match="must hold a JSON list"):
        load_pcogalign(root, splits=("ls1_test",))
    (root / "HCSHR-golden-test.json").unlink()
    with pytest.raises(FileNotFoundError, match="HCSHR-golden-test.json"):
        load_pcogalign(root, splits=("ls2_test",))
    with pytest.raises(ValueError, match="Unknown PCogAlignBench split"):
        load_pcogalign(root, splits=("train",))


def test_system_prompt_exact():
    role_set = {"Home": "a Father", "Community": "a Fireman"}
    assert pcogalign_system_prompt(role_set) == (
        'You are a helpful assistant for a user who is "a Father at Home; a Fireman at Community".'
    )
