"""The model card a latent trainer writes beside the model it saves (`README.md` in `args.output_dir`).

TRL writes a card on every checkpoint save (and on `push_to_hub`) with `create_model_card`, from its language-model
template: the base is read from `config._name_or_path` (empty for a latent model, so the card says "None"), the quick
start is a `pipeline("text-generation")` that would decode the base's own tokens without the latent actions, and the
trainer's paper is the parent trainer's. [`LatentModelCardMixin`] wraps that method: TRL writes its card as usual
(metadata: tags, datasets, model name), then the card's body is rendered again from this module's template. The card
then

- names the base model (`LatentActionConfig.base_model_name_or_path`) and what trained the model: a latent SFT stage
  ([`stage_training`]) or latent-action RL with its objective ([`rl_training`]);
- shows how to load the model (`LatentActionModel.from_pretrained(folder)` and the processor saved beside it) and
  decode with latent actions (`trl_latent.latent_generate`), with the trainer's own decoding settings;
- lists the trl-latent version beside TRL's, transformers', PyTorch's, datasets' and tokenizers';
- cites the latent-action paper, CoLA, the objective's paper (RL) and TRL.

Each trainer says what trained the model in `_model_card_training()`, which returns a [`CardTraining`].
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

__all__ = [
    "COLA_PAPER",
    "LATENT_ACTIONS_PAPER",
    "LATENT_MODEL_CARD_TEMPLATE",
    "OBJECTIVE_PAPERS",
    "PEFT_START_PLACEHOLDER",
    "CardTraining",
    "LatentModelCardMixin",
    "Paper",
    "latent_model_card",
    "rl_training",
    "stage_training",
]


@dataclass(frozen=True)
class Paper:
    """A paper a card cites: its title, arXiv id and BibTeX entry."""

    name: str
    title: str
    arxiv_id: str
    bibtex: str


LATENT_ACTIONS_PAPER = Paper(
    name="coverage-enhanced latent actions (Li et al., ACL 2026)",
    title="Controlling Multimodal Conversational Agents with Coverage-Enhanced Latent Actions",
    arxiv_id="2601.07516",
    bibtex="""\
@inproceedings{li2026controlling,
    title     = {{Controlling Multimodal Conversational Agents with Coverage-Enhanced Latent Actions}},
    author    = {Yongqi Li and Hao Lang and Tieyun Qian and Yongbin Li},
    booktitle = {Proceedings of the 64th Annual Meeting of the Association for Computational Linguistics (ACL)},
    year      = 2026,
    eprint    = {arXiv:2601.07516},
}""",
)

COLA_PAPER = Paper(
    name="CoLA (Jia et al., ICML 2025)",
    title="Controlling Large Language Model with Latent Action",
    arxiv_id="2503.21383",
    bibtex="""\
@inproceedings{jia2025controlling,
    title     = {{Controlling Large Language Model with Latent Action}},
    author    = {Chengxing Jia and Ziniu Li and Pengyuan Wang and Yi-Chen Li and Zhenyu Hou and Yuxiao Dong and Yang Yu},
    booktitle = {Proceedings of the 42nd International Conference on Machine Learning (ICML)},
    year      = 2025,
    eprint    = {arXiv:2503.21383},
}""",
)

# The paper of each RL objective, by loss name (`trl_latent.training.losses.LOSS_CLASSES`).
OBJECTIVE_PAPERS: dict[str, Paper] = {
    "grpo": Paper(
        name="GRPO",
        title="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
        arxiv_id="2402.03300",
        bibtex="""\
@article{shao2024deepseekmath,
    title  = {{DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models}},
    author = {Zhihong Shao and Peiyi Wang and Qihao Zhu and Runxin Xu and Junxiao Song and Mingchuan Zhang and Y. K. Li and Y. Wu and Daya Guo},
    year   = 2024,
    eprint = {arXiv:2402.03300},
}""",
    ),
    "dr_grpo": Paper(
        name="Dr.GRPO",
        title="Understanding R1-Zero-Like Training: A Critical Perspective",
        arxiv_id="2503.20783",
        bibtex="""\
@article{liu2025understanding,
    title  = {{Understanding R1-Zero-Like Training: A Critical Perspective}},
    author = {Zichen Liu and Changyu Chen and Wenjun Li and Penghui Qi and Tianyu Pang and Chao Du and Wee Sun Lee and Min Lin},
    year   = 2025,
    eprint = {arXiv:2503.20783},
}""",
    ),
    "dapo": Paper(
        name="DAPO",
        title="DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
        arxiv_id="2503.14476",
        bibtex="""\
@article{yu2025dapo,
    title  = {{DAPO: An Open-Source LLM Reinforcement Learning System at Scale}},
    author = {Qiying Yu and Zheng Zhang and Ruofei Zhu and Yufeng Yuan and Xiaochen Zuo and Yu Yue and Tiantian Fan and Gaohong Liu and Lingjun Liu and Xin Liu and Haibin Lin and Zhiqi Lin and Bole Ma and Guangming Sheng and Yuxuan Tong and Chi Zhang and Mofan Zhang and Wang Zhang and Hang Zhu and Jinhua Zhu and Jiaze Chen and Jiangjie Chen and Chengyi Wang and Hongli Yu and Weinan Dai and Yuxuan Song and Xiangpeng Wei and Hao Zhou and Jingjing Liu and Wei-Ying Ma and Ya-Qin Zhang and Lin Yan and Mu Qiao and Yonghui Wu and Mingxuan Wang},
    year   = 2025,
    eprint = {arXiv:2503.14476},
}""",
    ),
    "bnpo": Paper(
        name="BNPO",
        title="BNPO: Beta Normalization Policy Optimization",
        arxiv_id="2506.02864",
        bibtex="""\
@article{xiao2025bnpo,
    title  = {{BNPO: Beta Normalization Policy Optimization}},
    author = {Changyi Xiao and Mengdi Zhang and Yixin Cao},
    year   = 2025,
    eprint = {arXiv:2506.02864},
}""",
    ),
}

# What the quick start of a run with a PEFT adapter on the policy loads the adapter onto when the run started from a
# latent model built in memory (one loaded from a folder names that folder, and so does the adapter's config).
PEFT_START_PLACEHOLDER = "path/to/the/latent/model/the/run/started/from"

_TRL_BIBTEX = """\
@software{vonwerra2020trl,
    title   = {{TRL: Transformers Reinforcement Learning}},
    author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
    license = {Apache-2.0},
    url     = {https://github.com/huggingface/trl},
    year    = 2020,
}"""


@dataclass(frozen=True)
class CardTraining:
    """What trained a model, as its card states it.

    Args:
        summary (`str`): one phrase, e.g. "latent-action RL (stage 6) with the Dr.GRPO objective (`loss="dr_grpo"`)".
        papers (`tuple[Paper, ...]`): the method's papers besides the latent-action paper and CoLA (the objective's).
        decoding (`dict[str, Any]`): keyword arguments of `latent_generate` the quick start decodes with.
        note (`str`): a caveat about using the model as it is now (empty: none).
    """

    summary: str
    papers: tuple[Paper, ...] = ()
    decoding: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def rl_training(policy_loss, args) -> CardTraining:
    """The card's account of latent-action RL (`LatentGRPOTrainer`) with `policy_loss` (a `PolicyLoss`) and `args`
    (a `LatentGRPOConfig`): the objective, its paper, and the rollout's decoding settings."""
    paper = OBJECTIVE_PAPERS.get(policy_loss.name)
    objective = paper.name if paper else type(policy_loss).__name__
    decoding = {
        "do_sample_codes": True,
        "code_top_k": args.code_top_k or None,
        "code_top_p": args.code_top_p,
        "code_temperature": args.code_temperature,
        "token_strategy": args.token_strategy,
    }
    if args.token_strategy == "sample":
        decoding["token_temperature"] = args.temperature
    return CardTraining(
        summary=f'latent-action RL (stage 6) with the {objective} objective (`loss="{policy_loss.name}"`, '
        f"`{type(policy_loss).__name__}`)",
        papers=(paper,) if paper else (),
        decoding=decoding,
    )


def stage_training(plan) -> CardTraining:
    """The card's account of a latent SFT stage (`LatentSFTTrainer`) from its resolved `StagePlan`."""
    from .stages import STAGE_NAMES

    note = ""
    if STAGE_NAMES.index(plan.name) < STAGE_NAMES.index("policy_bc"):
        note = (
            "The policy is trained from stage 4 (`policy_bc`) on: after this stage latent decoding runs, but the "
            "latent actions come from an untrained policy."
        )
    return CardTraining(
        summary=f"the latent SFT stage `{plan.name}` ({plan.stage.description})",
        decoding={"do_sample_codes": False},  # the policy's argmax codes, as stage 5 and greedy evaluation use them
        note=note,
    )


LATENT_MODEL_CARD_TEMPLATE = """\
---
{{ card_data }}
---

# Model Card for {{ model_name }}

This model is a latent action model built on the base model {{ base_model_link }}{% if dataset_name %}, trained on \
the [{{ dataset_name }}](https://huggingface.co/datasets/{{ dataset_name }}) dataset{% endif %}. It was trained with \
{{ training.summary }}, using trl-latent {{ trl_latent_version }} on \
[TRL](https://github.com/huggingface/trl).

Instead of sampling one of the base's tokens at each step, a policy picks one of {{ codebook_size }} learned latent \
actions and a language world model turns (state, action) into the next token ([{{ latent_paper.title }}]\
(https://huggingface.co/papers/{{ latent_paper.arxiv_id }}), building on CoLA, [{{ cola_paper.title }}]\
(https://huggingface.co/papers/{{ cola_paper.arxiv_id }})). Decode it with `latent_generate` as below: `generate` \
or a `transformers` pipeline on the base would decode the base's own tokens and ignore the latent actions.
{% if training.note %}
{{ training.note }}
{% endif %}
## Quick start

```python
{% if peft %}from peft import PeftModel
{% endif %}{% if is_vlm %}from PIL import Image
from transformers import AutoProcessor
{% else %}from transformers import AutoTokenizer
{% endif %}
from trl_latent import LatentActionModel, latent_generate

folder = "{{ model_path }}"  # this card's folder: the model and its processor, as the trainer saved them
{% if peft %}start = "{{ peft_start }}"  # the latent model this run started from (its policy carries the adapter)
model = LatentActionModel.from_pretrained(start)
model = PeftModel.from_pretrained(model, folder).merge_and_unload()
{% else %}model = LatentActionModel.from_pretrained(folder)  # loads the base from its reference unless saved here
{% endif %}{% if is_vlm %}processor = AutoProcessor.from_pretrained(folder, padding_side="left")

image = Image.new("RGB", (224, 224), "white")  # your image
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(text=[prompt], images=[image], return_tensors="pt")
tokenizer = processor.tokenizer
{% else %}tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")

messages = [{"role": "user", "content": "Hello! Who are you?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
{% endif %}
# Per step the policy picks a latent action and the world model turns it into the next token.
out = latent_generate(
    model,
    **inputs,
    max_new_tokens=64,
{% for key, value in decoding %}    {{ key }}={{ value }},
{% endfor %})
print(tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)[0])
print("latent actions:", out.codes[0].tolist())
```

## Training procedure

{% for badge in badges %}{{ badge }}
{% endfor %}{% if badges %}
{% endif %}This model was trained with {{ trainer_name }}: {{ training.summary }}{% for paper in training.papers %}, a method \
introduced in [{{ paper.title }}](https://huggingface.co/papers/{{ paper.arxiv_id }}){% endfor %}. The latent action \
space follows [{{ latent_paper.title }}](https://huggingface.co/papers/{{ latent_paper.arxiv_id }}) and \
[{{ cola_paper.title }}](https://huggingface.co/papers/{{ cola_paper.arxiv_id }}).

### Framework versions

- trl-latent: {{ trl_latent_version }}
- TRL: {{ trl_version }}
- Transformers: {{ transformers_version }}
- Pytorch: {{ pytorch_version }}
- Datasets: {{ datasets_version }}
- Tokenizers: {{ tokenizers_version }}

## Citations

{% for paper in papers %}Cite {{ paper.name }} as:

```bibtex
{{ paper.bibtex }}
```

{% endfor %}Cite TRL as:

```bibtex
{{ trl_bibtex }}
```
"""


def _hub_id(name_or_path: str | None) -> str | None:
    """A model id on the Hub, or `None` for a local folder (TRL's rule for a card's `base_model`)."""
    return name_or_path if name_or_path and not os.path.isdir(name_or_path) else None


def _python_literal(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def latent_model_card(
    card_data,
    *,
    latent,
    training: CardTraining,
    trainer_name: str,
    model_name: str | None,
    model_path: str,
    dataset_name: str | None = None,
    peft_start: str | None = None,
    badges: list[str] | tuple[str, ...] = (),
):
    """The card of a latent action model.

    Args:
        card_data (`huggingface_hub.ModelCardData`): the card's metadata (TRL's: tags, datasets, model name); its
            `base_model` is set to the latent model's base when that is a Hub id, and `library_name` to trl-latent.
        latent ([`LatentActionModel`]): the trained model.
        training ([`CardTraining`]): what trained it.
        trainer_name (`str`): the trainer's name (TRL's `_name`).
        model_name (`str`, *optional*): the card's title.
        model_path (`str`): where the quick start loads the model from (the Hub id, or the folder the card is in).
        dataset_name (`str`, *optional*): a Hub dataset the model was trained on.
        peft_start (`str`, *optional*): with a PEFT adapter on the policy, where the quick start loads the latent
            model the adapter goes on.
        badges (`list[str]`): experiment-tracker badges (Markdown lines), as on TRL's card.

    Returns:
        `huggingface_hub.ModelCard`
    """
    from huggingface_hub import ModelCard

    import trl_latent

    base = latent.config.base_model_name_or_path
    hub_base = _hub_id(base)
    card_data.base_model = hub_base
    card_data.library_name = "trl-latent"
    if hub_base:
        base_model_link = f"[{hub_base}](https://huggingface.co/{hub_base})"
    elif base:
        base_model_link = f"`{base}` (a local folder)"
    else:
        base_model_link = "(not recorded in the model's config)"
    return ModelCard.from_template(
        card_data,
        template_str=LATENT_MODEL_CARD_TEMPLATE,
        model_name=model_name,
        base_model_link=base_model_link,
        dataset_name=dataset_name,
        training=training,
        codebook_size=latent.config.codebook_size,
        is_vlm=latent.backbone.is_vlm,
        peft=peft_start is not None,
        peft_start=peft_start,
        model_path=model_path,
        decoding=[(key, _python_literal(value)) for key, value in training.decoding.items()],
        badges=list(badges),
        trainer_name=trainer_name,
        latent_paper=LATENT_ACTIONS_PAPER,
        cola_paper=COLA_PAPER,
        papers=[LATENT_ACTIONS_PAPER, COLA_PAPER, *training.papers],
        trl_bibtex=_TRL_BIBTEX,
        trl_latent_version=trl_latent.__version__,
        trl_version=version("trl"),
        transformers_version=version("transformers"),
        pytorch_version=version("torch"),
        datasets_version=version("datasets"),
        tokenizers_version=version("tokenizers"),
    )


class LatentModelCardMixin:
    """Mixed into a latent trainer (a TRL trainer subclass that defines `_model_card_training()`): the card TRL writes
    on save says what the latent model is (see the module docstring)."""

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        # TRL writes its card; its metadata (tags, datasets, model name) and tracker badges are kept, its body is not.
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from accelerate.utils import is_peft_model
        from huggingface_hub import ModelCard

        path = os.path.join(self.args.output_dir, "README.md")
        trl_card = ModelCard.load(path)
        model = self.accelerator.unwrap_model(self.model)
        peft_start = None
        if is_peft_model(model):  # an adapter on the policy: the folder holds the adapter only
            model = model.get_base_model()
            # The saved latent model the run started from (set when it was loaded from a folder).
            peft_start = getattr(model, "name_or_path", None) or PEFT_START_PLACEHOLDER
        card = latent_model_card(
            trl_card.data,
            latent=model,
            training=self._model_card_training(),
            trainer_name=self._name,
            model_name=model_name,
            model_path=self.hub_model_id or self.args.output_dir,
            dataset_name=dataset_name,
            peft_start=peft_start,
            badges=[line for line in trl_card.text.splitlines() if line.startswith("[<img ")],
        )
        card.save(path)
