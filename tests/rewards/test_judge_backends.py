"""`rewards.judge_backends`: what a judge backend is, and how its failures are labelled."""

from tests.fixtures.bad_input import KEY, Case, bad_input_test
from trl_latent.rewards.judge_backends import CallableJudgeBackend, OpenAIJudgeBackend, status_label


def test_a_function_is_a_backend():
    def scripted(messages):
        return f"{len(messages)} messages, last: {messages[-1]['content']}"

    backend = CallableJudgeBackend(scripted)
    assert backend([{"role": "user", "content": "hi"}]) == "1 messages, last: hi"
    assert repr(backend) == "CallableJudgeBackend(scripted)"


def test_http_statuses_are_labelled_with_their_reason():
    assert status_label(401) == "HTTP 401 Unauthorized" and status_label(404) == "HTTP 404 Not Found"
    assert status_label(599) == "HTTP 599"


def test_the_openai_backend_keeps_its_key_out_of_its_repr(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-TESTKEYTESTKEYTESTKEY0123456789")
    backend = OpenAIJudgeBackend("http://127.0.0.1:9/v1", "judge", api_key_env="TEST_JUDGE_KEY", timeout=1.0)
    assert "sk-TESTKEY" not in repr(backend)
    assert "sk-TESTKEYTESTKEYTESTKEY0123456789" in backend.secrets()


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "judge/key_passed_as_env_name",
        lambda c: OpenAIJudgeBackend("http://localhost:1/v1", "judge", api_key_env=KEY),
        ValueError,
        ("api_key_env must be the NAME of the environment variable", "looks like a key itself"),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT)
