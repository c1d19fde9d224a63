"""Every Python snippet in the README and the lead docs runs (docs cannot rot)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Docs whose snippets are executed here; the other docs/*.md are executed by their own feature's tests.
DOCS = ["README.md", "docs/model.md"]


def _snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_snippets_run(doc, tmp_path, monkeypatch, tiny_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    snippets = _snippets(ROOT / doc)
    assert snippets, f"{doc} has no python snippet"
    namespace: dict = {}
    for code in snippets:  # snippets of one page share a namespace, as a reader runs them in order
        exec(compile(code, f"{doc}", "exec"), namespace)


def test_public_api_imports():
    import trl_latent

    for name in trl_latent.__all__:
        assert getattr(trl_latent, name) is not None, name
    with pytest.raises(AttributeError):
        trl_latent.NotAThing  # noqa: B018
