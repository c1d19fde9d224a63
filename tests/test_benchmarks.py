"""Benchmark scripts run at toy size: they run and report what they claim (every field present, the ratios finite and
positive, the world-output forms ordered as at full size)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    token, latent, ratios = result["token"], result["latent"], result["latent_over_token"]
    timings = ["step_s", "generation_s", "scoring_s", "update_s"]
    memory = ["peak_memory_mb", "peak_memory_over_start_mb"]  # on CPU: peak RSS, and its rise over the start
    # ... and the peak RSS within each phase (the high-water mark reset at each boundary); the process's peak is theirs.
    memory += [f"{phase}_peak_memory_mb" for phase in ("setup", "generation", "scoring", "update")]
    for run in (token, latent):
        assert run["steps_measured"] == 1 and run["generation_batch"] == 2 and run["device"] == "cpu"
        # Every phase was timed, and the phases make up the step (generation + rest of the rollout + update).
        for key in timings + memory:
            assert math.isfinite(run[key]) and run[key] > 0, (run["trainer"], key, run[key])
        step = run["steps"][0]
        assert step["step"] == pytest.approx(step["generation"] + step["scoring"] + step["update"], rel=1e-9)
        assert run["mean_completion_length"] == 4  # exactly --new-tokens tokens, no early EOS
        assert 0 < run["trainable_parameters"] <= run["parameters"] and run["reference_parameters"] > 0
        phase_peaks = [run[key] for key in memory[2:]]
        assert max(phase_peaks) <= run["peak_memory_mb"] < max(phase_peaks) + 64, (phase_peaks, run["peak_memory_mb"])
    # Every ratio is latent / token of the fields reported, finite and positive.
    assert set(ratios) == {*timings, *memory, "reference_parameters", "trainable_parameters", "mean_completion_length"}
    for key, ratio in ratios.items():
        assert math.isfinite(ratio) and ratio > 0, (key, ratio)
        assert ratio == pytest.approx(latent[key] / token[key], rel=1e-12), key
    # Only the policy trains, and the KL reference is a copy of it alone (stock TRL: the whole VLM twice).
    assert latent["trainable_parameters"] == latent["reference_parameters"] < token["trainable_parameters"]
    assert token["reference_parameters"] == token["parameters"] and ratios["mean_completion_length"] == 1.0
    table = out.with_suffix(".md").read_text()
    assert "| whole step (s) |" in table and table.count("x |") == len(ratios)


@pytest.mark.slow
def test_plan_check_benchmark_smoke(tmp_path, tiny_cache):
    """Two processes under ZeRO-3 in DeepSpeed's bf16 mode run stage 5 and report their memory; the plan for that run
    sits beside it. bf16 is the mode a GPU run uses: before the new modules took the partitioned base's dtype, this
    run failed at the first world-model matmul (a bf16 base under fp32 merge blocks)."""
    out = tmp_path / "plan_check.json"
    _run(
        "plan_check.py",
        *("--size", "tiny", "--zero", "zero3", "--processes", "2", "--steps", "2", "--precision", "bf16"),
        *("--cache-dir", str(tiny_cache), "--out", str(out)),
    )
    result = json.loads(out.read_text())
    assert [r["rank"] for r in result["ranks"]] == [0, 1]
    for rank in result["ranks"]:
        assert rank["processes"] == 2 and rank["zero_stage"] == 3 and "DEEPSPEED" in rank["distributed_type"]
        assert len(rank["step_peaks_mb"]) == len(rank["losses"]) == 2  # two optimizer steps, each measured
        assert all(math.isfinite(loss) and loss > 0 for loss in rank["losses"])
        assert 0 < rank["start_mb"] <= rank["built_mb"] and rank["train_peak_over_start_mb"] > 0
        live = rank["live_tensors_after_last_step"]  # what holds the memory between steps
        assert live["count"] > 0 and live["total_mb"] >= live["largest_mb"][0][0] > 0
    assert result["micro_batch"][0] == 2 and result["image_tokens"] > 0 and result["precision"] == "bf16"
    plan = result["plan_mb"]
    assert plan["total"] == pytest.approx(
        sum(plan[k] for k in ("weights", "gradients", "optimizer", "reference", "activations"))
    )
    assert 0 < result["plan_counts"]["trainable"] < result["plan_counts"]["total"]
    measured = max(r["train_peak_over_start_mb"] for r in result["ranks"])
    assert result["predicted_over_measured"] == pytest.approx(plan["total"] / measured)
    assert "Predicted / measured" in out.with_suffix(".md").read_text()


def test_world_outputs_benchmark_smoke(tmp_path, tiny_cache):
    out = tmp_path / "forms"
    _run("world_outputs.py", "--quick", "--steps", "12", "--cache-dir", str(tiny_cache), "--output-dir", str(out))
    result = json.loads((out / "world_outputs.json").read_text())
    forms = result["forms"]
    assert result["steps"] == 12 and set(forms) == {
        "residual_minus_base",
        "merge_delta",
        "residual_norm",
        "residual",
        "base_plus_delta",
    }
    for row in forms.values():
        assert 0 <= row["health/world_accuracy_inverse"] <= row["health/world_accuracy_best"] <= 1
    # At the quick size the base has had 4 steps of its general corpus and knows few answer tokens (measured: base alone
    # 8.4%; after 12 steps of stage 1: minus-base 0.0%, merge-delta 5.6%, residual-norm 8.6%, residual 8.4%): the forms
    # that start from the base's own prediction keep it, minus-base loses it (the full-size table: docs/model.md).
    base = forms["merge_delta"]["health/base_accuracy"]
    minus_base, merge_delta = forms["residual_minus_base"], forms["merge_delta"]
    assert all(row["health/base_accuracy"] == base for row in forms.values()) and base > 0.0
    assert minus_base["health/world_accuracy_best"] < 0.5 * base, minus_base
    assert merge_delta["health/world_accuracy_inverse"] > minus_base["health/world_accuracy_best"], forms
    assert abs(forms["residual_norm"]["health/world_accuracy_inverse"] - base) < 0.05, forms
    assert (out / "world_outputs.md").read_text().startswith("| form in stage 1 |")


def _common():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import common

    return common


def test_decoding_step_flops_by_hand():
    common = _common()
    # hidden 8, 2 heads of 4, 1 KV head: q and o 8x8, k and v 8x4; MLP 3 x 8x16; attention over 5 positions.
    layer = 2 * (2 * 64 + 2 * 32) + 2 * 3 * 128 + 4 * 5 * 8
    assert common.decoder_layer_flops(8, 16, 2, 1, context=5) == layer == 1312
    flops = common.decoding_step_flops(
        hidden=8,
        intermediate=16,
        heads=2,
        kv_heads=1,
        layers=3,
        vocab=100,
        policy_layers=2,
        codebook_size=4,
        context=5,
    )
    token = 3 * layer + 2 * 8 * 100
    merge = 2 * 2 * (2 * 16 * 16 + 16 * 8)  # two blocks: gate and up 16x16 (concat[x, c]), down 16x8
    latent = token + 2 * layer + 2 * 8 * 4 + merge
    assert flops == {"token_flops": token, "latent_flops": latent, "ratio": latent / token}


def test_arithmetic_ratio_matches_the_modules(tiny_cache):
    """At no context, a step's FLOPs are twice the weights of the linears it runs: the base's LM layers and lm_head
    (token), plus the policy's layers and head and the merge blocks (latent)."""
    from torch import nn

    from trl_latent.experiments.models import tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    common = _common()
    model = LatentActionModel.from_base(str(tiny_vlm_path("tiny", cache_dir=tiny_cache)), policy_layers=2)

    def linear_weights(module):
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))

    backbone = model.backbone
    token = 2 * (linear_weights(backbone.text_model.layers) + backbone.lm_head.weight.numel())
    latent = token + 2 * (linear_weights(model.policy) + linear_weights(model.world_merge))
    flops = common.arithmetic_ratio(model, context=0)
    assert (flops["token_flops"], flops["latent_flops"]) == (token, latent)


def test_gpu_check_cpu_fallback(tmp_path, tiny_cache):
    """The GPU check's CPU fallback (tiny size): the same path as on a GPU, so the script cannot rot."""
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--cache-dir", str(tiny_cache)]
    subprocess.run([*cmd, "--out", str(out)], check=True, cwd=ROOT, timeout=600, env=env)
    result = json.loads(out.read_text())
    assert result["tiny"] and result["sizes"] == ["tiny"] and result["shape"]["new_tokens"] == 4
    (row,) = result["decoding"]
    assert row["size"] == "tiny" and row["latent_over_token"] > 0 and row["arithmetic_ratio"] > 1
    assert "token static" in row["times_s"] or "token static" in row["skipped"]
    rl = result["rl_step"]["tiny"]
    assert rl["latent"]["mean_completion_length"] == 4 and rl["latent"]["generation_batch"] == 2
    assert "token-static" in rl["variants"] and rl["plan_check"]["predicted_mb"] > 0
    targets = result["targets"]
    assert {t["target"].split(" <=")[0] for t in targets} >= {"rl step", "policy update", "peak memory"}
    assert all(isinstance(t["met"], bool) and math.isfinite(t["measured"]) for t in targets)
    table = out.with_suffix(".md").read_text()
    assert table.startswith("# GPU check: CPU") and "## Targets" in table and "| target | size |" in table


def test_latent_settings_benchmark_smoke(tmp_path, tiny_cache):
    """Two settings on one seed at the quick size: each builds stages 1-5 from the same base (no RL) and reports the
    paper-protocol evaluation on the three splits and the health after stage 5."""
    out = tmp_path / "settings"
    settings = ["merge_delta, argmax (embedded)", "authors, argmax (library)"]
    _run("latent_settings.py", "--quick", "--seeds", "0", "--cache-dir", str(tiny_cache), "--output-dir", str(out),
         "--settings", *settings)  # fmt: skip
    result = json.loads((out / "latent_settings.json").read_text())
    assert list(result["runs"]) == settings
    for name in settings:
        (run,) = result["runs"][name]
        assert set(run["eval"]) == {"id", "ood", "held_out"}
        assert all(
            0.0 <= run["eval"][s]["all"] <= 1.0 and run["eval"][s]["eval_generations"] == 3 for s in run["eval"]
        )
        assert "health/content_controllability" in run["health"]
    # The settings really differ: the authors' schedule trains stage 1 under minus-base, the embedded job under
    # merge-delta, and their health after stage 1 differs.
    after = {name: result["runs"][name][0]["health_after"]["inverse_warmup"] for name in settings}
    assert after[settings[0]] != after[settings[1]]
    assert (out / "latent_settings.md").read_text().startswith("| setting |")
