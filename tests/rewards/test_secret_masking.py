"""`trl_latent.rewards.secret_masking`: keys and known secrets never reach logs, errors or reprs."""

from trl_latent.rewards.secret_masking import known_secrets, looks_like_secret, mask_secrets


def test_known_secrets_come_from_key_shaped_environment_variables(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_API_KEY", "abcdefgh12345678")
    monkeypatch.setenv("MY_JUDGE_MODEL", "not-a-secret-value")
    found = known_secrets(["explicit-secret-0001"])
    assert "abcdefgh12345678" in found and "explicit-secret-0001" in found
    assert "not-a-secret-value" not in found


def test_masking_replaces_known_and_key_shaped_strings(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_API_KEY", "abcdefgh12345678")
    text = "request with abcdefgh12345678 and sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345 failed"
    masked = mask_secrets(text)
    assert "abcdefgh12345678" not in masked and "sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345" not in masked
    assert masked.startswith("request with ***") and masked.endswith("failed")
    assert looks_like_secret("sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345") and not looks_like_secret("hello")
    assert mask_secrets("nothing to hide") == "nothing to hide"
