"""Benchmark scripts run at toy size (they are scripts, not tests: this only keeps them from rotting)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], check=True, cwd=ROOT, timeout=600)


def test_latent_decoding_benchmark_smoke(tmp_path, tiny_cache, monkeypatch):
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    out = tmp_path / "decoding.json"
    _run("latent_decoding.py", "--sizes", "tiny", "--new-tokens", "4", "--repeats", "1", "--out", str(out))
    (row,) = json.loads(out.read_text())
    assert row["latent_over_token"] > 0 and 0 <= row["policy_share"] <= 1
    assert out.with_suffix(".md").read_text().startswith("| size |")


def test_rl_step_benchmark_smoke(tmp_path, tiny_cache):
    out = tmp_path / "rl_step.json"
    _run(
        "rl_step.py",
        *("--size", "tiny", "--new-tokens", "4", "--repeats", "1", "--rounds", "1", "--prompts", "1"),
        *("--generations", "2", "--cache-dir", str(tiny_cache), "--out", str(out)),
    )
    result = json.loads(out.read_text())
    assert result
    assert out.with_suffix(".md").exists()


def test_world_outputs_benchmark_smoke(tmp_path, tiny_cache):
    out = tmp_path / "forms"
    _run("world_outputs.py", "--quick", "--steps", "2", "--cache-dir", str(tiny_cache), "--output-dir", str(out))
    result = json.loads((out / "world_outputs.json").read_text())
    assert set(result["forms"]) == {
        "residual_minus_base",
        "merge_delta",
        "residual_norm",
        "residual",
        "base_plus_delta",
    }
    for row in result["forms"].values():
        assert 0 <= row["health/world_accuracy_inverse"] <= row["health/world_accuracy_best"] <= 1
        assert row["health/controllability"] >= 1
    assert (out / "world_outputs.md").read_text().startswith("| form in stage 1 |")
