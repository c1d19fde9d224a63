"""Tests of `trl_latent.experiments.text_roleplay`: `test_<mod>.py` tests `trl_latent/experiments/text_roleplay/<mod>.py`."""
