"""`modeling.inspection`: what each latent action does (usage, top tokens, the report)."""

from tests.fixtures.latent_models import question_batch as _batch
from trl_latent.modeling.inspection import format_code_report, inspect_codes


def test_inspect_codes_reports_usage_and_tokens(model, processor):
    batch = _batch(processor)
    report = inspect_codes(model, [batch, batch], processor.tokenizer, top_n=3)
    assert len(report) == 16 and [r["code"] for r in report] == list(range(16))
    text_steps = int(model.encode(**batch).text_mask[:, :-1].sum()) * 2
    assert sum(r["count"] for r in report) == text_steps
    assert abs(sum(r["frequency"] for r in report) - 1) < 1e-6
    assert all(len(r["top_tokens"]) >= 1 and isinstance(r["top_tokens"][0][0], str) for r in report)
    table = format_code_report(report)
    assert table.startswith("| code |") and len(table.splitlines()) >= 3
