"""Tests of `trl_latent.experiments.shapes`: `test_<mod>.py` tests `trl_latent/experiments/shapes/<mod>.py`."""
