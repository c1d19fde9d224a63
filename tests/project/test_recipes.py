"""Recipes cannot rot: every YAML under examples/recipes/ runs through the real commands at tiny size.

The same files, with command-line overrides for the model (the tiny VLM), the data (the synthetic shapes task written
to a temporary folder, in the MMRole layout, with its pretraining corpora; PCogAlignBench records written here) and the
length of the run (one step). Output paths are the recipes' own, relative to the working folder, so each stage reads
what the stage before it wrote. The judge is a scripted OpenAI-compatible server on 127.0.0.1.

Each stage must have trained: its saved model exists, the stage's trainable modules changed against its input and
every other module is bit-identical. Evaluation must print and write its table. One subprocess runs the recipe script
(`examples/recipes/run.sh`) itself.
"""

import gc
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.fixtures.paths import ROOT

RECIPES = ROOT / "examples" / "recipes"
MODELS = ("qwen2.5-vl-3b", "qwen2.5-vl-7b")
TASKS = ("mmrole", "pcogalign")
PRETRAIN = ("1_inverse_warmup", "2_projector_warmup", "3_joint", "4_policy_bc")
TASK_YAMLS = ("5_world_sft", "6_grpo", "token_sft", "token_grpo", "eval")
LORA_RECIPE = (
    "qwen2.5-vl-7b/mmrole/6_grpo_lora.yaml"  # stage 6 with a LoRA adapter on the policy, as `plan` recommends
)
LATENT_GROUPS = ("codebook", "inverse_dynamics", "world_merge", "policy", "projector", "inverse_projector")
# What each stage trains (docs/stages.md); every other group must come out bit-identical.
TRAINS = {
    "1_inverse_warmup": {"inverse_dynamics", "codebook", "world_merge"},
    "2_projector_warmup": {"projector", "inverse_projector"},
    "3_joint": {"inverse_dynamics", "codebook", "world_merge", "projector", "inverse_projector"},
    "4_policy_bc": {"policy"},
    "5_world_sft": {"base"},
    "6_grpo": {"policy"},
}

TRAIN = "--max_steps 1 --gradient_accumulation_steps 1 --warmup_steps 0 --use_cpu true --bf16 false --report_to none "
TRAIN += "--logging_steps 1 --save_strategy no"
SFT = TRAIN + " --per_device_train_batch_size 2"
GRPO = TRAIN + " --per_device_train_batch_size 4 --num_generations 4 --max_completion_length 12 --judge_timeout 20"
# The documented `inspect` command (docs/recipes.md); the recipe test runs it on stage 4's output.
INSPECT = (
    "trl-latent inspect --model_name_or_path outputs/qwen2.5-vl-3b/4_policy_bc --paired_files data/pretrain/paired.jsonl "
    "--image_root data/pretrain"
)
SCRIPT = "examples/recipes/run.sh qwen2.5-vl-3b mmrole"
EVAL = "--max_new_tokens 4 --max_samples 2 --batch_size 2 --embedder none --judge_timeout 20"


# ------------------------------------------------------------------------------------------------ fixtures
def judge_titles() -> list[str]:
    from trl_latent.rewards.judge import MMROLE_RUBRIC, PCOGALIGN_RUBRIC

    return [d.title for d in MMROLE_RUBRIC.dimensions + PCOGALIGN_RUBRIC.dimensions]


class ScriptedJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint: scores each answer by a hash of its text, so different answers get
    different rewards (GRPO needs a spread within each group to have anything to learn)."""

    titles: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # models.list(): the start-up connection check
        self._send({"object": "list", "data": [{"id": "judge", "object": "model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = request["messages"][-1]["content"]
        score = 1 + sum(answer.encode()) % 9
        text = "\n".join(f"{i}. {t}: ok [Scores]: ({score}, 8)" for i, t in enumerate(self.titles, 1))
        message = {"role": "assistant", "content": text}
        self._send(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "judge",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )


def write_pcogalign(root: Path, n_train: int = 8, n_test: int = 2) -> None:
    """PCogAlignBench files in the release's format (docs/tasks_and_rewards.md), images made here."""
    offset = 0
    for stem, subset, n in (("HCMAS-golden-train", "HCMAS", n_train), ("HCMAS-golden-test", "HCMAS", n_test),
                            ("HCSHR-golden-test", "HCSHR", n_test)):  # fmt: skip
        records = []
        for i in range(offset, offset + n):
            records.append(
                {
                    "id": f"{subset}-{i}",
                    "individual_RoleSet": {"Home": "a Father", "Workplace": "an Engineer"},
                    "query": f"What should I do about the {['red', 'blue'][i % 2]} thing?",
                    "image": {"file_path": f"images/{i}.png"},
                    "eval_info": {"ImageDesc": "a scene", "location": "Home", "EvalHelp": "Be kind."},
                    "golden_response": f"Take a short break and check it again, step {i}.",
                }
            )
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (56, 56), ["red", "blue"][i % 2]).save(root / "images" / f"{i}.png")
        offset += n
        (root / f"{stem}.json").write_text(json.dumps(records))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_cache):
    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    ws = tmp_path_factory.mktemp("recipes")
    write_synthetic_task(ws / "data" / "shapes", sessions_per_file=2, ood_sessions_per_character=1, n_paired=8,
                         n_text_only=8)  # fmt: skip
    write_pcogalign(ws / "data" / "pcog")
    ScriptedJudge.titles = judge_titles()
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedJudge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "root": ws,
        "tiny": str(tiny_vlm_path("tiny", cache_dir=tiny_cache)),
        "judge": f"http://127.0.0.1:{server.server_address[1]}/v1",
    }
    server.shutdown()
    server.server_close()
    gc.unfreeze()  # see run_cli


def overrides(ws: dict, name: str, task: str | None) -> list[str]:
    """The tiny-size command-line overrides of one recipe YAML."""
    shapes = "data/shapes"
    if name in PRETRAIN:
        args = (
            f"{SFT} --paired_files {shapes}/pretrain/paired.json --text_only_files {shapes}/pretrain/text_only.json "
        )
        args += f"--image_root {shapes}"
        args = args.split() + (["--base_model", ws["tiny"]] if name == PRETRAIN[0] else [])
        return args
    # The MMRole recipes read the synthetic task, written in the MMRole release layout (the same loader; prompts short
    # enough for the tiny model, whose context is 2048 tokens).
    root = shapes if task == "mmrole" else "data/pcog"
    args = ["--task_root", root, "--image_size", "56", "56"]
    if name == "5_world_sft":
        return args + SFT.split()
    if name == "token_sft":
        return args + SFT.split() + ["--base_model", ws["tiny"], "--gradient_checkpointing", "false"]
    if name in ("6_grpo", "token_grpo"):
        # One step of a tiny, barely trained latent model can give identical rollouts (zero advantages, no update):
        # sampling the world model's tokens makes the group's answers differ, so the one step must move the policy.
        sample = ["--token_strategy", "sample"] if name == "6_grpo" else []
        return args + GRPO.split() + sample + ["--judge_base_url", ws["judge"]]
    return args + EVAL.split() + ["--judge_base_url", ws["judge"]]


def command_for(yaml_path: Path) -> str:
    """How the docs write the command of a recipe YAML."""
    kind = "eval" if yaml_path.stem == "eval" else "grpo" if "grpo" in yaml_path.stem else "sft"
    return f"trl-latent {kind} --config examples/recipes/{yaml_path.relative_to(RECIPES).as_posix()}"


def argv_of(command: str) -> list[str]:
    """A documented command as `trl_latent.cli.main` arguments, recipe paths made absolute."""
    return [t.replace("examples/recipes/", f"{RECIPES}/", 1) for t in shlex.split(command)[1:]]


def run_cli(argv: list[str]) -> None:
    from trl_latent.cli import main

    # Each trainer ends with a full garbage collection (accelerate's `free_memory`); objects that live on (imported
    # modules, fixtures) are frozen out of it: measured here, the 3B chain went from 59 s to 23 s.
    gc.collect()
    gc.freeze()
    assert main(argv) == 0, argv


# ------------------------------------------------------------------------------------------------ checks
def group_state(path: str) -> dict[str, dict[str, torch.Tensor]]:
    """A saved latent model's parameters, grouped by top-level module (`base`, `policy`, ...)."""
    from trl_latent.modeling.model import LatentActionModel

    model = LatentActionModel.from_pretrained(path)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():
        groups.setdefault(name.split(".")[0], {})[name] = tensor.detach().clone()
    return groups


def changed_groups(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {g for g in before if any(not torch.equal(before[g][k], after[g][k]) for k in before[g])}


def assert_trained(name: str, before: dict, output: str) -> dict:
    assert (Path(output) / "config.json").is_file() and (Path(output) / "model.safetensors").is_file(), output
    after = group_state(output)
    assert changed_groups(before, after) == TRAINS[name], name
    return after


def fresh_init(ws: dict, recipe: dict) -> dict:
    """The stage-1 input: the base wrapped with fresh latent modules, seeded as the command seeds it."""
    from transformers import set_seed

    from trl_latent.modeling.model import LatentActionModel

    set_seed(recipe["seed"])
    model = LatentActionModel.from_base(
        ws["tiny"],
        codebook_size=recipe["codebook_size"],
        inverse_layers=recipe["inverse_layers"],
        policy_layers=recipe["policy_layers"],
    )
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in model.state_dict().items():
        groups.setdefault(name.split(".")[0], {})[name] = tensor.detach().clone()
    return groups


def vlm_state(path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return {k: v.detach().clone() for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()}


def parser_of(path: Path, config: dict):
    """The parser of the command that runs a recipe YAML (`command_for`)."""
    from trl_latent.commands import eval as eval_command
    from trl_latent.commands import grpo, sft
    from trl_latent.commands.parsing import trl_parser

    kind = command_for(path).split()[1]
    if kind == "eval":
        return trl_parser((eval_command.EvalArguments,), "trl-latent eval", "")
    return (sft if kind == "sft" else grpo).make_parser(config.get("action_space", "latent"))


def defaults_of(path: Path, config: dict) -> dict:
    return {action.dest: action.default for action in parser_of(path, config)._actions if action.dest != "help"}


def load(path: Path) -> dict:
    """What a recipe runs with: the command's defaults, then what the YAML `extends`, then its own keys."""
    from trl_latent.commands.parsing import load_config

    config = load_config(path)
    return {**defaults_of(path, config), **config}


def same(default, value) -> bool:
    return default == value or str(default) == str(value) or getattr(default, "value", object()) == value


# ------------------------------------------------------------------------------------------------ tests
def test_recipe_files_and_paper_hyperparameters():
    """Every model has stages 1-4 and, per task, 5, 6, the token baseline and eval, with the paper's settings."""
    from trl_latent.commands.parsing import load_config

    for model in MODELS:
        for name, stage, lr in zip(PRETRAIN, ("inverse_warmup", "projector_warmup", "joint", "policy_bc"),
                                   (1e-4, 1e-3, 1e-4, 1e-4)):  # fmt: skip
            config = load(RECIPES / model / f"{name}.yaml")
            assert (config["stage"], config["learning_rate"], config["num_train_epochs"]) == (stage, lr, 1)
        for task in TASKS:
            world = load(RECIPES / model / task / "5_world_sft.yaml")
            assert (world["stage"], world["learning_rate"], world["num_train_epochs"]) == ("world_sft", 5e-5, 3)
            token_sft = load(RECIPES / model / task / "token_sft.yaml")
            assert (token_sft["learning_rate"], token_sft["num_train_epochs"]) == (5e-5, 3)
            for name in ("6_grpo", "token_grpo"):
                rl = load(RECIPES / model / task / f"{name}.yaml")
                got = [rl[k] for k in ("learning_rate", "num_generations", "beta", "epsilon", "max_completion_length")]
                assert got == [1e-6, 8, 0.01, 0.2, 1024], (model, task, name)
                assert rl.get("code_temperature", rl.get("temperature")) == 1.0
                assert rl["task"] == task
            # Latent decoding on the library's default (dynamic) cache: the static cache measured no faster at the 3B
            # width (results/perf/latent_decoding-cpu-3b-width.json), so the recipes do not override it.
            assert "latent_cache_implementation" not in load_config(RECIPES / model / task / "6_grpo.yaml")
            assert load(RECIPES / model / task / "eval.yaml")["num_generations"] == 3
    found = {p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob("*.yaml")}
    expected = {f"{m}/{n}.yaml" for m in MODELS for n in PRETRAIN}
    expected |= {f"{m}/{t}/{n}.yaml" for m in MODELS for t in TASKS for n in TASK_YAMLS}
    expected.add(LORA_RECIPE)
    assert found == expected  # a new YAML must be added to the runs below
    lora, full = load(RECIPES / LORA_RECIPE), load(RECIPES / LORA_RECIPE.replace("_lora", ""))
    assert {k: v for k, v in lora.items() if full.get(k) != v} == {
        "use_peft": True,
        "output_dir": full["output_dir"] + "_lora",
    }
    assert (lora["lora_r"], lora["lora_alpha"], lora["lora_dropout"]) == (
        16,
        32,
        0.05,
    )  # TRL's defaults, as `plan` sizes


def test_recipes_state_only_what_differs_from_the_defaults_and_what_they_extend():
    """No recipe key restates the command's default (`stage` and `action_space` name what the file is and stay), and
    no key of a file that `extends` another restates that file's value."""
    from trl_latent.commands.parsing import load_config

    for path in sorted(RECIPES.rglob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        parent = (path.parent / own.pop("extends")) if "extends" in own else None
        baseline = load(parent) if parent else defaults_of(path, load_config(path))
        restated = {k: v for k, v in own.items() if k not in ("stage", "action_space") and k in baseline}
        restated = {k: v for k, v in restated.items() if same(baseline[k], v)}
        assert not restated, f"{path.relative_to(RECIPES)} restates {restated}"


def test_7b_recipes_are_the_3b_ones_plus_their_differences():
    """Each 7B file `extends` its 3B twin and sets only the 7B base, its folders and per-device batch: the resolved
    settings agree elsewhere, and the global batch (per device x accumulation) is the same."""
    sized = {"base_model", "model_name_or_path", "models", "output_dir"}
    batch = {"per_device_train_batch_size", "gradient_accumulation_steps"}
    for path in sorted((RECIPES / "qwen2.5-vl-7b").rglob("*.yaml")):
        relative = path.relative_to(RECIPES / "qwen2.5-vl-7b")
        if relative.as_posix() == LORA_RECIPE.split("/", 1)[1]:
            continue
        twin = RECIPES / "qwen2.5-vl-3b" / relative
        own = yaml.safe_load(path.read_text())
        assert (path.parent / own.pop("extends")).resolve() == twin.resolve(), relative
        assert set(own) <= sized | batch, (relative, set(own) - sized - batch)
        seven, three = load(path), load(twin)
        assert {k for k in seven if seven[k] != three[k]} <= sized | batch, relative
        for key in sized & set(own):
            assert "qwen2.5-vl-7b" in str(seven[key]) or "7B" in str(seven[key]), (relative, key)
        if "gradient_accumulation_steps" in seven:  # the training stages (eval has no optimiser step)
            product = [c["per_device_train_batch_size"] * c["gradient_accumulation_steps"] for c in (seven, three)]
            assert product[0] == product[1], (relative, product)


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {p.stem: p for p in (ROOT / "examples" / "accelerate_configs").glob("*.yaml")}
    assert {"single_gpu", "ddp", "zero2", "zero3", "zero3_offload"} <= set(configs)
    for name, path in configs.items():
        config = load_config_from_file(str(path))
        assert config.distributed_type.value in ("NO", "MULTI_GPU", "DEEPSPEED"), name
    offload = load_config_from_file(str(configs["zero3_offload"])).deepspeed_config
    assert (offload["zero_stage"], offload["offload_param_device"], offload["offload_optimizer_device"]) == (
        3,
        "cpu",
        "cpu",
    )


@pytest.mark.parametrize("model", MODELS)
def test_recipe_runs_every_stage_at_tiny_size(model, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace["root"])
    run_recipe(workspace, model, capsys)


def run_recipe(ws: dict, model: str, capsys) -> None:
    """Every YAML of one model's recipe, in order, each checked to have trained (run in the workspace folder)."""
    recipe = RECIPES / model

    # Stages 1-4 (shared by the tasks): each reads the previous stage's output_dir, as the YAMLs say.
    state = fresh_init(ws, load(recipe / "1_inverse_warmup.yaml"))
    for name in PRETRAIN:
        config = load(recipe / f"{name}.yaml")
        run_cli([*argv_of(command_for(recipe / f"{name}.yaml")), *overrides(ws, name, None)])
        state = assert_trained(name, state, config["output_dir"])
    if model == "qwen2.5-vl-3b":
        shapes = ["--paired_files", "data/shapes/pretrain/paired.json", "--image_root", "data/shapes"]
        run_cli([*argv_of(INSPECT), *shapes, "--max_records", "4", "--output_dir", "inspect"])
        codes = json.loads(Path("inspect/codes.json").read_text())
        assert len(codes) == load(recipe / "1_inverse_warmup.yaml")["codebook_size"]
        assert sum(row["count"] for row in codes) > 0 and any(row["examples"] for row in codes)

    for task in TASKS:
        yamls = {name: recipe / task / f"{name}.yaml" for name in TASK_YAMLS}
        configs = {name: load(path) for name, path in yamls.items()}
        assert configs["5_world_sft"]["model_name_or_path"] == load(recipe / "4_policy_bc.yaml")["output_dir"]
        world = state
        for name in ("5_world_sft", "6_grpo"):
            run_cli([*argv_of(command_for(yamls[name])), *overrides(ws, name, task)])
            before_rl, world = world, assert_trained(name, world, configs[name]["output_dir"])
        if f"{model}/{task}/6_grpo_lora.yaml" == LORA_RECIPE:  # the adapter variant of stage 6, from the stage-5 model
            lora = load(RECIPES / LORA_RECIPE)
            run_cli([*argv_of(command_for(RECIPES / LORA_RECIPE)), *overrides(ws, "6_grpo", task)])
            adapter = json.loads((Path(lora["output_dir"]) / "adapter_config.json").read_text())
            assert adapter["base_model_name_or_path"] == configs["5_world_sft"]["output_dir"] and adapter["r"] == 16
            assert changed_groups(before_rl, group_state(lora["output_dir"])) == {"policy"}  # the adapter, merged

        run_cli([*argv_of(command_for(yamls["token_sft"])), *overrides(ws, "token_sft", task)])
        token_sft = vlm_state(configs["token_sft"]["output_dir"])
        assert any(not torch.equal(v, token_sft[k]) for k, v in vlm_state(ws["tiny"]).items())
        run_cli([*argv_of(command_for(yamls["token_grpo"])), *overrides(ws, "token_grpo", task)])
        token_rl = vlm_state(configs["token_grpo"]["output_dir"])
        assert any(not torch.equal(v, token_rl[k]) for k, v in token_sft.items())

        capsys.readouterr()
        run_cli([*argv_of(command_for(yamls["eval"])), *overrides(ws, "eval", task)])
        printed = capsys.readouterr().out
        out = Path(configs["eval"]["output_dir"])
        table = (out / "evaluation.md").read_text()
        assert table in printed
        splits = configs["eval"]["splits"]
        assert len(configs["eval"]["models"]) == 4
        for path in configs["eval"]["models"]:
            name = Path(path).name
            summary = json.loads((out / name / "evaluation.json").read_text())["summary"]
            assert set(summary) == set(splits)
            for split in splits:
                result = summary[split]
                assert result["num_prompts"] == 2 and result["num_generations"] == 3
                assert 0 < result["judge_mean"] and result["judge_std"] >= 0 and result["judge_failures"] == 0
                row = re.search(rf"^\| {re.escape(name)} \| {split} \| 2 \| (\S+) ± (\S+) \|", table, re.M)
                assert row and float(row.group(1)) == pytest.approx(result["judge_mean"], abs=1e-3), (name, split)


def test_recipe_script_resumes_and_evaluates(workspace, monkeypatch, capsys):
    """The recipe script itself, in one subprocess: finished stages are skipped, an unfinished one (the token
    baseline's RL, deleted here) runs under `accelerate launch`, and eval prints its table."""
    ws = workspace
    model, task = "qwen2.5-vl-3b", "mmrole"
    recipe = RECIPES / model
    if not (ws["root"] / load(recipe / task / "token_grpo.yaml")["output_dir"] / "config.json").is_file():
        monkeypatch.chdir(ws["root"])  # run alone: make the stage outputs the in-process test makes first
        run_recipe(ws, model, capsys)
    rl_output = ws["root"] / load(recipe / task / "token_grpo.yaml")["output_dir"]
    shutil.rmtree(rl_output)
    # The script's default launcher, accelerate, with the one-process config (the CPU stands in for the GPU).
    env = dict(os.environ, ACCELERATE_TOKEN_RL="single_gpu", PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this environment's accelerate
    env["SFT_ARGS"] = " ".join(overrides(ws, "5_world_sft", task))
    env["GRPO_ARGS"] = " ".join(overrides(ws, "token_grpo", task))
    # One model and split keep the subprocess short; the in-process test evaluates all four on both splits.
    env["EVAL_ARGS"] = " ".join(overrides(ws, "eval", task) + ["--models", str(rl_output), "--splits", "id_test"])
    script, *script_args = shlex.split(SCRIPT)
    assert script_args == [model, task]
    result = subprocess.run(
        [str(ROOT / script), *script_args], cwd=ws["root"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = re.findall(r"^== (\S+): skipped", result.stdout, re.M)
    assert [Path(p).stem for p in skipped] == [*PRETRAIN, "5_world_sft", "6_grpo", "token_sft"]
    assert (rl_output / "model.safetensors").is_file()
    assert "| token_grpo | id_test | 2 |" in result.stdout and "trl-latent eval: results written" in result.stdout


def test_recipe_script_resumes_an_interrupted_stage_from_its_checkpoint(tmp_path):
    """A stage whose output_dir holds a checkpoint but no saved model (an interrupted run) is run again with
    `--resume_from_checkpoint true`; a finished stage is skipped, a fresh one starts from step 0. The commands are
    recorded by a stand-in interpreter, so only the script's decisions are tested here."""
    recipe = RECIPES / "qwen2.5-vl-3b"
    outputs = {name: tmp_path / load(recipe / f"{name}.yaml")["output_dir"] for name in PRETRAIN}
    outputs[PRETRAIN[0]].mkdir(parents=True)
    (outputs[PRETRAIN[0]] / "config.json").write_text("{}")  # finished
    (outputs[PRETRAIN[1]] / "checkpoint-3").mkdir(parents=True)  # interrupted after step 3
    log = tmp_path / "commands.log"
    stand_in = tmp_path / "python"
    # the script's own reads of the YAMLs (`python -c`, config_value) run; the stages' commands are only recorded
    stand_in.write_text(
        f'#!/usr/bin/env bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\necho "$*" >> {log}\n'
    )
    stand_in.chmod(0o755)
    env = dict(os.environ, LAUNCHER="python", PYTHON=str(stand_in))
    result = subprocess.run(
        [str(ROOT / "examples/recipes/run.sh"), "qwen2.5-vl-3b", "mmrole"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{PRETRAIN[0]}.yaml: skipped" in result.stdout
    assert f"{PRETRAIN[1]}.yaml: resuming from the newest complete checkpoint" in result.stdout
    commands = log.read_text().splitlines()
    assert commands[0].endswith(f"{PRETRAIN[1]}.yaml --resume_from_checkpoint true")
    assert not any("resume_from_checkpoint" in line for line in commands[1:])
    assert len(commands) == 8  # stages 2-6, the token baseline's two, eval


def test_recipe_script_stops_before_any_stage_when_the_plan_does_not_fit(tmp_path):
    """With the GPUs given, a recipe whose plan does not fit them fails up front with what to try: no stage starts."""
    env = dict(os.environ, NUM_GPUS="1", GPU_MEMORY="16", PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    script, *_ = shlex.split(SCRIPT)
    result = subprocess.run(
        [str(ROOT / script), "qwen2.5-vl-7b", "mmrole"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "ZeRO-2 does not fit 1 GPU(s) of 16 GiB. Try:" in result.stderr
    assert "run.sh: stage 1 of qwen2.5-vl-7b does not fit 1 GPU(s) of 16 GiB under zero2" in result.stderr
    assert "== " not in result.stdout and not (tmp_path / "outputs").exists()


def test_documented_commands_are_the_ones_run_here():
    """Every recipe command in the docs is one the tests above run (with the tiny-size overrides appended)."""
    from tests.fixtures.documented_commands import (  # run by tests/data/test_prompt_datasets.py
        documented_dataset_command,
        documented_eval_command,
        documented_sft_commands,
    )

    tested = {command_for(p) for p in RECIPES.rglob("*.yaml")} | {INSPECT, SCRIPT}
    tested.add(" ".join(documented_dataset_command()))
    tested.add(" ".join(documented_eval_command()))
    tested |= {" ".join(command) for command in documented_sft_commands()}
    documented = []
    for doc in (ROOT / "docs" / "recipes.md", RECIPES / "README.md", ROOT / "README.md"):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():  # continuation lines joined
                line = line.split("  #")[0].strip()
                if "run.sh" in line or re.match(r"trl-latent (sft|grpo|eval|inspect)\b", line):
                    documented.append(line)
    assert documented
    assert set(documented) <= tested, set(documented) - tested
