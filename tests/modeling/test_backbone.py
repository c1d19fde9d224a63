"""`modeling.backbone`: which bases are supported and how they load, and a text-only base (Llama, Qwen2) through
every stage, trainer and command, with its tokenizer as the processing class: its text records are the observation
(paired) stream, there is no projector stage, stage 5 trains the base's tail, and a latent model built on a tiny
Llama saves, reloads and decodes identically."""

import json

import pytest
import torch
from datasets import Dataset

from tests.fixtures.paths import ROOT
from tests.fixtures.text_only import CORPUS, SMALL, base_path, chat_records, text_records, tokenizer_of
from trl_latent.data.collator import LatentDataCollator, assistant_token_mask
from trl_latent.data.pretrain import BadRecordError
from trl_latent.modeling import LatentActionModel
from trl_latent.modeling.backbone import CAUSAL_LM_MODEL_TYPES, VLM_MODEL_TYPES, base_model_class, check_supported
from trl_latent.modeling.tiny import tiny_lm, tiny_lm_path
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer
from trl_latent.training.stages import resolve_stage


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def arch(request):
    return request.param


def config(tmp_path, stage, **kwargs):
    kwargs = {
        "max_steps": 8,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "health_samples": 8,
        "save_strategy": "no",
        **kwargs,
    }
    return LatentSFTConfig(str(tmp_path / stage), stage=stage, use_cpu=True, bf16=False, report_to="none", **kwargs)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}


def logged(trainer, key):
    return [row[key] for row in trainer.state.log_history if key in row]


def test_supported_bases_and_their_loader_classes():
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    assert all(base_model_class(t) is AutoModelForImageTextToText for t in VLM_MODEL_TYPES)
    assert all(base_model_class(t) is AutoModelForCausalLM for t in CAUSAL_LM_MODEL_TYPES)
    with pytest.raises(NotImplementedError, match=r"type 'gemma3'.*text-only causal LMs \('qwen2', 'llama'\)"):
        check_supported("gemma3")


def test_tiny_llama_is_shaped_like_smollm2(tiny_cache):
    model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="llama")
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert tokenizer.pad_token is None and tokenizer.eos_token == "<|im_end|>"
    assert "{% generation %}" not in tokenizer.chat_template
    with pytest.raises(ValueError, match="Unknown tiny causal LM"):
        tiny_lm_path("tiny", cache_dir=tiny_cache, corpus=CORPUS, arch="mistral")


def test_the_stage_table_on_a_text_only_base():
    args = LatentSFTConfig("out", stage="joint", use_cpu=True, report_to="none")
    plan = resolve_stage(args, text_only_base=True)
    assert plan.streams == ("paired",) and not plan.paired_requires_image
    assert set(plan.weights) == {"world/ce_paired", "inverse/entropy"}
    assert plan.trainable == ("inverse_dynamics", "codebook", "world_merge")
    bc = resolve_stage(LatentSFTConfig("out", stage="policy_bc", use_cpu=True, report_to="none"), text_only_base=True)
    assert set(bc.weights) == {"policy/bc_paired"} and bc.streams == ("paired",)
    # The vision-language plan is unchanged.
    assert resolve_stage(args).streams == ("paired", "text") and resolve_stage(args).paired_requires_image
    with pytest.raises(ValueError, match="text-only base has no image-text states, hence no projector"):
        resolve_stage(LatentSFTConfig("out", stage="projector_warmup", use_cpu=True), text_only_base=True)


def test_every_stage_on_a_text_only_base(tiny_cache, tmp_path, arch):
    """Stages 1, 3, 4 on plain text records, stage 5 on chat records (assistant tokens only), each through a save and
    `from_pretrained`: each stage's loss falls and exactly its trainable tensors change."""
    tokenizer = tokenizer_of(tiny_cache, arch)
    text = Dataset.from_dict({"text": text_records(64)})
    chats = Dataset.from_dict({"messages": chat_records(32)})
    model = LatentActionModel.from_base(base_path(tiny_cache, arch), **SMALL)
    expected = {
        "inverse_warmup": ("inverse_dynamics.", "codebook.", "world_merge."),
        "joint": ("inverse_dynamics.", "codebook.", "world_merge."),
        "policy_bc": ("policy.",),
    }
    for stage, data, loss_key in (
        ("inverse_warmup", text, "world/ce_paired"),
        ("joint", text, "world/ce_paired"),
        ("policy_bc", text, "policy/bc_paired"),
        ("world_sft", chats, "world/ce_paired"),
    ):
        args = config(
            tmp_path,
            stage,
            assistant_only_loss=stage == "world_sft",
            world_sft_last_layers=1,
            learning_rate=2e-3 if stage == "world_sft" else 1e-2,
            max_steps=12 if stage == "world_sft" else 8,
        )
        before = snapshot(model)
        trainer = LatentSFTTrainer(model, args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        losses = logged(trainer, loss_key)
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, (stage, losses)
        moved = changed(before, model)
        if stage in expected:
            assert moved and all(name.startswith(expected[stage]) for name in moved), (stage, sorted(moved)[:5])
            assert not any(name.startswith(("projector.", "inverse_projector.")) for name in moved)
        else:  # world_sft: the last layer, the final norm and the embeddings of the base, nothing else
            layers = model.backbone.text_model.layers
            assert any(name.startswith("base.model.layers.1.") for name in moved)
            assert not any(name.startswith("base.model.layers.0.") for name in moved)
            assert any("embed_tokens" in name for name in moved) and any("model.norm." in name for name in moved)
            assert all(name.startswith("base.") for name in moved) and len(layers) == 2
        assert "health/world_accuracy_inverse" in trainer.health
        trainer.save_model(str(tmp_path / f"{stage}-saved"))
        model = LatentActionModel.from_pretrained(str(tmp_path / f"{stage}-saved"))
    with pytest.raises(ValueError, match="no projector: skip this stage"):
        LatentSFTTrainer(model, config(tmp_path, "projector_warmup"), train_dataset=text, processing_class=tokenizer)


def test_text_only_records_as_text_dataset_and_bad_input(tiny_cache, tmp_path):
    tokenizer = tokenizer_of(tiny_cache, "llama")
    model = LatentActionModel.from_base(base_path(tiny_cache, "llama"), **SMALL)
    text = Dataset.from_dict({"text": text_records(8)})
    # Text records given as the text-only stream are the observation stream of a text-only base.
    trainer = LatentSFTTrainer(model, config(tmp_path, "inverse_warmup", max_steps=1), text_dataset=text,
                               processing_class=tokenizer)  # fmt: skip
    assert len(trainer.train_dataset) == 8 and trainer.text_dataset is None
    with pytest.raises(ValueError, match="reads one stream of text records"):
        LatentSFTTrainer(model, config(tmp_path, "joint"), train_dataset=text, text_dataset=text,
                         processing_class=tokenizer)  # fmt: skip
    from PIL import Image

    collate = LatentDataCollator(tokenizer, paired_requires_image=False)
    record = {"messages": chat_records(1)[0], "images": [Image.new("RGB", (8, 8))], "paired_index": 0}
    with pytest.raises(BadRecordError, match="the base is text-only"):
        collate([record])
    with pytest.raises(TypeError, match="ProcessorMixin"):
        LatentDataCollator(tokenizer)  # a tokenizer cannot feed a stream that requires images


def test_missing_pad_token_pads_with_eos_and_keeps_eos_trained(tiny_cache, tmp_path):
    tokenizer = tokenizer_of(tiny_cache, "llama")
    assert tokenizer.pad_token is None
    model = LatentActionModel.from_base(base_path(tiny_cache, "llama"), **SMALL)
    texts = ["The red star is on the left.", "The blue circle is on the top. The green star is on the right."]
    trainer = LatentSFTTrainer(model, config(tmp_path, "inverse_warmup", max_steps=1),
                               train_dataset=Dataset.from_dict({"text": texts}), processing_class=tokenizer)  # fmt: skip
    assert tokenizer.pad_token == tokenizer.eos_token and model.config.pad_token_id == tokenizer.eos_token_id
    batch = trainer.data_collator([dict(trainer.train_dataset[i]) for i in range(2)])["paired"]
    eos = tokenizer.eos_token_id
    short = batch["attention_mask"][0]
    n = int(short.sum())
    assert short[:n].all() and not short[n:].any()  # right padding
    assert batch["input_ids"][0, n - 1] == eos and batch["loss_mask"][0, n - 1]  # its own EOS is trained
    assert (batch["input_ids"][0, n:] == eos).all() and not batch["loss_mask"][0, n:].any()  # padding is not


def test_assistant_mask_from_a_template_without_generation_markers(tiny_cache):
    """SmolLM2's ChatML template has no `{% generation %}` markers and TRL has no training version of it: the
    assistant tokens come from the template's rendering, and they equal what the markers give on a template that
    has them (TRL's Qwen2.5 training template renders the same ChatML turns)."""
    from trl.chat_template_utils import qwen2_5_training_chat_template

    llama = tokenizer_of(tiny_cache, "llama")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is the red star?"},
        {"role": "assistant", "content": "On the left."},
        {"role": "user", "content": "And the blue one?"},
        {"role": "assistant", "content": "On the top."},
    ]
    ids, mask = assistant_token_mask(llama, messages)
    assert ids == llama.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    kept = llama.decode([i for i, m in zip(ids, mask) if m])
    assert kept == "On the left.<|im_end|>\nOn the top.<|im_end|>\n"
    qwen = tokenizer_of(tiny_cache, "qwen2")
    q_ids, q_mask = assistant_token_mask(qwen, messages, chat_template=qwen2_5_training_chat_template)
    assert qwen.decode([i for i, m in zip(q_ids, q_mask) if m]).replace("\n", "") == kept.replace("\n", "")


def test_a_latent_llama_saves_reloads_and_decodes_identically(tiny_cache, tmp_path):
    tokenizer = tokenizer_of(tiny_cache, "llama")
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = LatentActionModel.from_base(base_path(tiny_cache, "llama"), **SMALL).eval()
    with torch.no_grad():  # codes that matter to the untrained world model
        model.codebook.proj.weight.mul_(100.0)
    prompts = [[{"role": "user", "content": "Where is the red star?"}], [{"role": "user", "content": "Hello"}]]
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    batch = dict(tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False))
    first = model.generate(**batch, max_new_tokens=8, do_sample_codes=False)
    model.save_pretrained(tmp_path / "latent")
    reloaded = LatentActionModel.from_pretrained(tmp_path / "latent")
    again = reloaded.generate(**batch, max_new_tokens=8, do_sample_codes=False)
    assert torch.equal(first.completion_ids, again.completion_ids) and torch.equal(first.codes, again.codes)
    assert len(set(first.codes.flatten().tolist())) > 1  # the codes vary, so equal decoding is not trivial
    for name, p in model.state_dict().items():
        assert torch.equal(p, reloaded.state_dict()[name]), name


def test_latent_grpo_on_a_tiny_llama(tiny_cache, tmp_path):
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    tokenizer = tokenizer_of(tiny_cache, "llama")
    model = LatentActionModel.from_base(base_path(tiny_cache, "llama"), **SMALL)
    with torch.no_grad():
        model.codebook.proj.weight.mul_(100.0)

    def reward(completions, **kwargs):  # varied rewards: the number of distinct characters in the completion
        return [float(len(set(c[0]["content"] if isinstance(c, list) else c))) for c in completions]

    args = LatentGRPOConfig(str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                            max_completion_length=6, max_steps=2, learning_rate=1e-2, use_cpu=True, bf16=False,
                            report_to="none", save_strategy="no")  # fmt: skip
    prompts = [[{"role": "user", "content": "Where is the red star?"}], [{"role": "user", "content": "Hello"}]]
    before = snapshot(model)
    trainer = LatentGRPOTrainer(model, reward_funcs=reward, args=args,
                                train_dataset=Dataset.from_dict({"prompt": prompts * 4}), processing_class=tokenizer)  # fmt: skip
    trainer.train()
    moved = changed(before, model)
    assert moved and all(name.startswith("policy.") for name in moved)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_the_commands_on_a_text_only_base(tiny_cache, tmp_path, capsys):
    from trl_latent.cli import main

    base = str(base_path(tiny_cache, "llama"))
    records = [{"id": str(i), "messages": m} for i, m in enumerate(chat_records(16))]
    data = tmp_path / "text.json"
    data.write_text(json.dumps(records))
    common = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--max_steps", "2",
              "--per_device_train_batch_size", "4", "--health_samples", "4", "--save_strategy", "no"]  # fmt: skip
    out1 = str(tmp_path / "s1")
    argv = ["sft", "--stage", "inverse_warmup", "--base_model", base, "--text_only_files", str(data),
            "--codebook_size", "16", "--inverse_layers", "1", "--policy_layers", "1", "--output_dir", out1]  # fmt: skip
    assert main(argv + common) == 0
    assert main(["sft", "--stage", "projector_warmup", "--model_name_or_path", out1, "--text_only_files",
                 str(data), "--output_dir", str(tmp_path / "s2"), *common]) == 2  # fmt: skip
    assert "no projector" in " ".join(capsys.readouterr().err.split())
    out3 = str(tmp_path / "s3")
    assert main(["sft", "--stage", "joint", "--model_name_or_path", out1, "--text_only_files", str(data),
                 "--output_dir", out3, *common]) == 0  # fmt: skip
    saved = LatentActionModel.from_pretrained(out3)
    assert saved.config.base_config["model_type"] == "llama"
    assert main(["inspect", "--model_name_or_path", out3, "--paired_files", str(data), "--batch_size", "4"]) == 0
    assert "codes used" in capsys.readouterr().out


def test_the_text_only_snippet_of_docs_stages_runs(tiny_cache, tmp_path, monkeypatch, capsys):
    import re

    page = (ROOT / "docs" / "stages.md").read_text()
    section = page.split("## A text-only base", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/stages.md", "exec"), {})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("inverse", "joint", "policy"))]
    assert [line.split(" ", 1)[0] for line in lines] == ["inverse_warmup", "joint", "policy_bc"]
    assert (
        "['inverse/entropy', 'world/ce_paired']" in lines[0] and "['inverse/entropy', 'world/ce_paired']" in lines[1]
    )
    assert "['policy/bc_paired']" in lines[2]
    assert all(-1.0 <= float(line.rsplit(" ", 1)[1]) <= 1.0 for line in lines)
