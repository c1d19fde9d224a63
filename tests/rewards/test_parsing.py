"""`rewards.parsing`: reading a judge's scores."""

from trl_latent.rewards.parsing import parse_scores
from trl_latent.rewards.rubrics import MMROLE_RUBRIC

DIMS = MMROLE_RUBRIC.dimensions


def test_the_formats_judges_write_are_read():
    assert parse_scores("1. Fluency: clear. [Scores]: (7, 8)", DIMS) == {"fluency": (7.0, 8.0)}
    assert parse_scores("Fluency: fine, A=6, B=9", DIMS) == {"fluency": (6.0, 9.0)}
    assert parse_scores('{"Fluency": [5, 7], "Instruction Adherence": {"A": 8, "B": 8}}', DIMS) == {
        "fluency": (5.0, 7.0),
        "instruction_adherence": (8.0, 8.0),
    }


def test_pairs_outside_the_scale_and_missing_dimensions_do_not_parse():
    assert parse_scores("1. Fluency: [Scores]: (0, 8)", DIMS) == {}  # 0 is below the 1-10 scale
    assert parse_scores("1. Fluency: [Scores]: (-3, 8)", DIMS) == {}  # "-3" is not 3
    assert parse_scores("1. Fluency: [Scores]: (nan, 8)", DIMS) == {}
    assert parse_scores("I cannot judge this.", DIMS) == {}
