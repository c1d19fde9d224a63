"""Contract with TRL: the pinned version range and the signatures of every TRL method trl-latent overrides or calls.

TRL's private methods change between minor releases. trl-latent's trainers wrap them with `super()` instead of
copying them, so a rename or a new parameter must fail here, loudly, rather than deep inside a training run.

To extend: add a row to `CONTRACT` for every TRL method a trl-latent trainer overrides (checked automatically by
`test_every_override_is_pinned`) or calls with arguments it builds itself.
"""

import importlib
import inspect
import pkgutil

import pytest
import trl
from packaging.version import Version
from transformers import Trainer

import trl_latent.training

TRL_RANGE = (Version("1.16"), Version("1.17"))  # pyproject: trl>=1.16,<1.17

# "trl.<Class>.<method>" ("transformers.Trainer.<method>", "trl.<module path>.<function>") -> parameter names, in order, as inspect.signature gives
# them. Comment: who overrides (O) or calls (C) it.
CONTRACT = {
    # O TokenGRPOTrainer: forwards model, reward_funcs, args positionally.
    "trl.GRPOTrainer.__init__": [
        "self",
        "model",
        "reward_funcs",
        "args",
        "train_dataset",
        "eval_dataset",
        "processing_class",
        "reward_processing_classes",
        "callbacks",
        "optimizers",
        "quantization_config",
        "peft_config",
        "tools",
        "rollout_func",
        "environment_factory",
    ],
    # O TokenGRPOTrainer: log-probs from TRL, loss from the PolicyLoss object.
    "trl.GRPOTrainer._compute_loss": ["self", "model", "inputs"],
    # O LatentGRPOTrainer: TRL's log (its completions table gains the `codes` column through `_logs["extra"]`), then
    # the per-code usage histogram.
    "trl.GRPOTrainer.log": ["self", "logs", "start_time"],
    # O PolicyLossMixin: keeps the gathered rewards, logs diversity, counts batches without a reward (reward_failures).
    "trl.GRPOTrainer._calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    # O PolicyLossMixin: advantages from the PolicyLoss object.
    "trl.GRPOTrainer._generate_and_score_completions": ["self", "inputs"],
    # C TokenGRPOTrainer._compute_loss (keywords: FORWARD_KWARGS of token_grpo_trainer).
    "trl.GRPOTrainer._get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "spatial_shapes",
        "num_tiles",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "image_position_ids",
    ],
    # C PolicyLossMixin._compute_policy_loss (keywords).
    "trl.GRPOTrainer.get_off_policy_mask": [
        "advantages",
        "per_token_logps",
        "sampling_per_token_logps",
        "mask",
        "off_policy_threshold",
    ],
    "trl.GRPOTrainer.get_high_entropy_mask": ["self", "entropies", "mask", "threshold"],
    # Rollout and batching entry points of the latent GRPO trainer.
    "trl.GRPOTrainer._prepare_inputs": ["self", "generation_batch"],
    "trl.GRPOTrainer._generate": ["self", "prompts"],
    "trl.GRPOTrainer.compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    # O LatentGRPOTrainer: latent decoding in place of token generation.
    "trl.GRPOTrainer._generate_single_turn": [
        "self",
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
        "has_tool_images",
    ],
    # O LatentGRPOTrainer; PolicyLossMixin (both GRPO trainers): raises RewardFailureError after a reward-failure stop;
    # ResumeCheckpointMixin (all three trainers): resolves `resume_from_checkpoint` (True: the newest complete
    # checkpoint) and passes it on positionally.
    "transformers.Trainer.train": ["self", "resume_from_checkpoint", "trial", "ignore_keys_for_eval"],
    # O LatentCheckpointMixin (both latent trainers): checkpoint weights through LatentActionModel.load_saved_weights.
    "transformers.Trainer._load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
    # O LatentModelCardMixin (both latent trainers): TRL writes its card to output_dir/README.md, then the body is
    # rendered again from trl_latent/training/model_card.py (TRL's metadata and tracker badges kept).
    "trl.trainer.base_trainer._BaseTrainer.create_model_card": ["self", "model_name", "dataset_name", "tags"],
    "transformers.Trainer._load_best_model": ["self"],
    # O LatentGRPOTrainer: the TR-DPO reference policy is saved with and restored from each checkpoint.
    "trl.GRPOTrainer._save_checkpoint": ["self", "model", "trial"],
    "trl.GRPOTrainer._load_optimizer_and_scheduler": ["self", "checkpoint"],
    # O LatentSFTTrainer.
    "trl.SFTTrainer.compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    # O LatentSFTTrainer.__init__: calls it with keywords model, args, data_collator, train_dataset, eval_dataset,
    # processing_class, callbacks, optimizers (peft_config is applied to the base by LatentSFTTrainer itself).
    "trl.SFTTrainer.__init__": [
        "self",
        "model",
        "args",
        "data_collator",
        "train_dataset",
        "eval_dataset",
        "processing_class",
        "compute_loss_func",
        "compute_metrics",
        "callbacks",
        "optimizers",
        "optimizer_cls_and_kwargs",
        "preprocess_logits_for_metrics",
        "quantization_config",
        "peft_config",
        "formatting_func",
    ],
    # C LatentDataCollator (trl_latent/data/pretrain.py): builds it with these keywords and calls `torch_call`.
    "trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling": [
        "processor",
        "max_length",
        "completion_only_loss",
        "pad_to_multiple_of",
        "dataset_text_field",
        "assistant_only_loss",
        "chat_template",
        "return_tensors",
    ],
    "trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling.torch_call": ["self", "examples"],
    # C LatentSFTTrainer: the training chat template for `assistant_only_loss`, as SFTTrainer builds it.
    "trl.chat_template_utils.get_training_chat_template": ["processing_class", "tokenizer"],
    "trl.chat_template_utils.has_generation_markers": ["chat_template"],
    # C losses.py: TRL's NaN-aware statistics, so advantages and metrics match TRL's bit for bit.
    "trl.trainer.utils.nanstd": ["tensor", "dim", "keepdim"],
    "trl.trainer.utils.nanmin": ["tensor"],
    "trl.trainer.utils.nanmax": ["tensor"],
}


def _resolve(path: str):
    """Import `trl.A.b.C.method` by importing the longest module prefix, then getattr the rest."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_trl_version_in_pinned_range():
    assert TRL_RANGE[0] <= Version(trl.__version__) < TRL_RANGE[1], (
        f"trl {trl.__version__} is outside the tested range [{TRL_RANGE[0]}, {TRL_RANGE[1]}): re-run the parity and "
        "contract tests against it, update CONTRACT, then widen the pin in pyproject.toml."
    )


@pytest.mark.parametrize("path", sorted(CONTRACT))
def test_signature(path):
    try:
        obj = _resolve(path)
    except AttributeError as err:
        pytest.fail(f"{path} no longer exists in trl {trl.__version__}: {err}")
    assert list(inspect.signature(obj).parameters) == CONTRACT[path], (
        f"{path} changed signature in trl {trl.__version__}; review every trl-latent override/call of it."
    )


def test_forward_kwargs_are_parameters_of_get_per_token_logps():
    from trl_latent.training.token_grpo_trainer import FORWARD_KWARGS

    assert set(FORWARD_KWARGS) <= set(CONTRACT["trl.GRPOTrainer._get_per_token_logps_and_entropies"])


def _trl_latent_trainers():
    classes = set()
    for info in pkgutil.iter_modules(trl_latent.training.__path__, "trl_latent.training."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, Trainer):
                classes.add(cls)
    return sorted(classes, key=lambda c: c.__qualname__)


def test_every_override_is_pinned():
    trainers = _trl_latent_trainers()
    assert any(cls.__name__ == "TokenGRPOTrainer" for cls in trainers)
    missing = []
    for cls in trainers:
        # The first class of the MRO outside trl-latent is the TRL trainer it extends (GRPOTrainer, SFTTrainer, ...).
        trl_base = next(base for base in cls.__mro__ if not base.__module__.startswith("trl_latent"))
        ours = [base for base in cls.__mro__ if base.__module__.startswith("trl_latent")]
        for base in ours:
            for name, member in vars(base).items():
                if not inspect.isfunction(member) or (name.startswith("__") and name != "__init__"):
                    continue
                if not hasattr(trl_base, name):
                    continue  # a new helper, not an override
                # Pinned under the class that defines it: "trl.GRPOTrainer.x", "transformers.Trainer.y"; a class the
                # package does not export by its full module path ("trl.trainer.base_trainer._BaseTrainer.z").
                owner = next(k for k in trl_base.__mro__ if name in vars(k))
                package = owner.__module__.split(".")[0]
                exported = getattr(importlib.import_module(package), owner.__name__, None) is owner
                key = f"{package if exported else owner.__module__}.{owner.__name__}.{name}"
                if key not in CONTRACT and name != "__init__":
                    missing.append(f"{cls.__name__}.{name} overrides {key}")
    assert not missing, "Add these TRL methods to CONTRACT: " + "; ".join(missing)
