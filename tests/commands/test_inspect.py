"""`commands.inspect` (`trl-latent inspect`): the report table and the parser's defaults."""

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
