"""`experiments.console`: only the known harmless warnings and log lines are quieted."""


def test_only_the_known_harmless_messages_are_quieted():
    import logging
    import warnings

    from trl_latent.experiments.console import quiet_known_warnings

    def shown(logger_name, message):
        record = logging.LogRecord(logger_name, logging.WARNING, __file__, 1, message, None, None)
        return logging.getLogger(logger_name).filter(record)

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # the suite's own filters ignore deprecations; start from "show everything"
        warnings.simplefilter("always")
        quiet_known_warnings()  # its filters go in front
        for module in ("transformers.modeling_utils", "trl_latent.experiments.shapes.pipeline"):
            warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module=module)
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "x.py", 1, module="m")
        warnings.warn_explicit("something else", FutureWarning, "x.py", 1, module="m")
    assert [(w.category, str(w.message)) for w in caught] == [
        (DeprecationWarning, "old API"),  # ours still shows
        (FutureWarning, "something else"),
    ]
    assert not shown("transformers.trainer_utils", "The tokenizer has new PAD/BOS/EOS tokens that differ from ...")
    assert shown("transformers.trainer_utils", "Some other problem")
    assert not shown("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, ...")
    assert shown("DeepSpeed", "ZeRO stage 3 is not supported here")
