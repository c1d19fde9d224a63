"""`data.formats`: a prompt dataset in TRL's SFT form."""

from datasets import Dataset
from PIL import Image

from trl_latent.data.formats import to_sft


def test_to_sft_appends_the_reference_as_the_assistant_turn():
    prompt = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Hi?"}]}]
    dataset = Dataset.from_list(
        [{"prompt": prompt, "image": Image.new("RGB", (8, 8)), "reference": "Hello.", "id": 1}]
    )
    (row,) = to_sft(dataset)
    assert set(row) == {"messages", "images", "reference", "id"}
    assert row["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}
    assert row["messages"][0]["content"][1]["text"] == "Hi?" and len(row["images"]) == 1
