"""`experiments.shapes.models`: the library's tiny-model builders bound to the task's tokenizer corpus, the same
builds as the library's own given that corpus."""

from trl_latent.experiments.shapes import models
from trl_latent.experiments.shapes.task_data import tokenizer_corpus
from trl_latent.modeling import tiny


def test_the_builders_are_the_librarys_given_the_tasks_corpus(tiny_cache):
    corpus = tokenizer_corpus()
    assert models.tiny_vlm_path("tiny", cache_dir=tiny_cache) == tiny.tiny_vlm_path(
        "tiny", cache_dir=tiny_cache, corpus=corpus
    )
    assert models.tiny_lm_path("tiny", cache_dir=tiny_cache) == tiny.tiny_lm_path(
        "tiny", cache_dir=tiny_cache, corpus=corpus
    )
    assert models.build_tokenizer().get_vocab() == tiny.build_tokenizer(corpus).get_vocab()
