"""`commands.inspect` (`trl-latent inspect`): the report table, the parser's defaults, and the command on a saved model."""

import json

import pytest

from trl_latent.cli import main
from trl_latent.commands.inspect import InspectArguments, format_report
from trl_latent.modeling.inspection import inspect_codes


def test_the_report_lists_used_codes_only_with_shares_tokens_and_examples():
    report = [
        {"code": 0, "count": 0, "frequency": 0.0, "top_tokens": [], "examples": []},
        {
            "code": 3,
            "count": 6,
            "frequency": 0.75,
            "top_tokens": [(" red", 0.5), (" blue", 0.25)],
            "examples": [{"context": "The circle is", "next": " red"}],
        },
    ]
    lines = format_report(report).splitlines()
    assert lines[0].startswith("| code | uses | share |") and len(lines) == 3
    assert lines[2] == "| 3 | 6 | 75.0% | ' red' (50%), ' blue' (25%) | 'The circle is' -> ' red' |"


def test_its_defaults_are_the_library_functions():
    import inspect

    fields = InspectArguments.__dataclass_fields__
    signature = inspect.signature(inspect_codes).parameters
    assert fields["top_n"].default == signature["top_n"].default
    assert fields["code_source"].default == signature["code_source"].default


def test_inspect_reports_usage_top_tokens_and_examples(tmp_path, shapes, tiny_cache, capsys):
    from transformers import AutoProcessor

    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.modeling.model import LatentActionModel

    tiny = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(str(tiny), codebook_size=8, inverse_layers=1, policy_layers=1)
    model.save_pretrained(tmp_path / "latent")
    AutoProcessor.from_pretrained(tiny).save_pretrained(tmp_path / "latent")

    argv = ["inspect", "--model_name_or_path", str(tmp_path / "latent"), "--task", "mmrole"]
    argv += ["--task_root", str(shapes), "--image_size", "56", "56", "--max_records", "3", "--batch_size", "2"]
    argv += ["--code_source", "policy", "--examples", "2", "--output_dir", str(tmp_path / "codes")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "codes" / "codes.json").read_text())
    assert [row["code"] for row in report] == list(range(8))
    used = [row for row in report if row["count"] > 0]
    assert used and sum(row["frequency"] for row in report) == pytest.approx(1.0)
    for row in report:
        assert len(row["examples"]) == min(2, row["count"])
        assert all(isinstance(ex["context"], str) and ex["context"] for ex in row["examples"])
        assert len(row["top_tokens"]) <= 5 and all(0 < share <= 1 for _, share in row["top_tokens"])
    assert f"{len(used)} of 8 codes used on 3 records (policy codes)" in printed
    assert printed.count("\n| ") >= len(used)  # one table row per used code
