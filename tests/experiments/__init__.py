"""Tests of `trl_latent.experiments`: `test_<mod>.py` tests `trl_latent/experiments/<mod>.py`, and so on below."""
