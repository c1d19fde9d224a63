"""`data.files`: an empty, truncated or non-UTF-8 data file fails the same way in every loader, naming the file, where
the problem is and what to do."""

import json

from tests.fixtures.bad_input import (
    TEXT_RECORD,
    Case,
    bad_input_test,
    damage_dialogues,
    pcog_record,
    pcog_root,
    pretrain_skip,
    truncated,
    write,
)
from trl_latent.data.files import DataFileError
from trl_latent.data.mmrole import MMRoleFormatError, load_mmrole
from trl_latent.data.pcogalign import PCogAlignFormatError, load_pcogalign
from trl_latent.data.pretrain import load_pretrain_corpus

BAD_INPUT = [
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
]


test_bad_input = bad_input_test(BAD_INPUT)
