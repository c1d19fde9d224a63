"""The judge reward against a real chat-completions HTTP server on 127.0.0.1, scripted per answer."""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures.bad_input import (
    KEY,
    Case,
    backend_error_with_key,
    bad_input_test,
    chat_answer,
    judge_answering,
    out_of_scale,
    pcog_without_evalhelp,
)
from trl_latent.rewards.judge import (
    MMROLE_RUBRIC,
    PCOGALIGN_RUBRIC,
    JudgeCheckError,
    JudgeConnectionError,
    JudgeReward,
    OpenAIJudgeBackend,
    TransformersJudgeBackend,
    parse_scores,
)

SECRET = "sk-test-SECRET-0123456789abcdef"
KEY_ENV = "TRL_LATENT_TEST_JUDGE_KEY"
TITLES = [d.title for d in MMROLE_RUBRIC.dimensions]


def pairs_answer(pairs, titles=TITLES):
    return "\n".join(f"{i}. {t}: fine. [Scores]: ({a}, {b})" for i, (t, (a, b)) in enumerate(zip(titles, pairs), 1))


GOOD = pairs_answer([(7, 8)] * 8)  # 56 / 64
GOOD2 = pairs_answer([(6, 8), (7, 8), (8, 8), (9, 8), (6, 8), (7, 8), (8, 8), (9, 8)])  # 60 / 64
PARTIAL = (
    "Fluency: smooth. [Scores]: (6, 8)\nI am not sure about the image.\n"
    "Coherency: A=4, B=8\nTone Consistency: (9, 10)\n"
)  # 19 / 26


class ScriptedJudge(BaseHTTPRequestHandler):
    """Answers by the marker in the policy answer (Response A): GOOD, GOOD2, PARTIAL, SLOW, E500, GARBAGE, WAIT (any
    other answer, such as the start-up test judgement's, gets GOOD)."""

    state = None  # set per server

    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200, {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": "t"}]}
            )
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        state = self.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["auth"].add(self.headers.get("Authorization"))
        user = body["messages"][-1]["content"]
        answer = user.split("## Response A\n", 1)[1].split("\n", 1)[0]
        with state["lock"]:
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            state["calls"][answer] = state["calls"].get(answer, 0) + 1
        try:
            if answer == "SLOW":
                time.sleep(2.0)
            if answer == "WAIT":
                time.sleep(0.2)
            if answer == "E500":
                return self._send(500, {"error": {"message": "boom"}})
            content = {
                "GOOD": GOOD,
                "GOOD2": GOOD2,
                "PARTIAL": PARTIAL,
                "WAIT": GOOD,
                "SLOW": GOOD,
                "GARBAGE": "As an AI I refuse to grade. Lorem ipsum dolor sit amet.",
            }.get(answer, GOOD)  # any other answer: the start-up test judgement
            self._send(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
        finally:
            with state["lock"]:
                state["in_flight"] -= 1


@pytest.fixture
def judge_server():
    state = {"lock": threading.Lock(), "in_flight": 0, "max_in_flight": 0, "calls": {}, "auth": set()}
    handler = type("Handler", (ScriptedJudge,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


def mmrole_batch(answers):
    n = len(answers)
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What do you see?"}]}]] * n
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    kwargs = {
        "reference": ["A reference answer."] * n,
        "character": ["Captain Rolo"] * n,
        "profile": [{"introduction": "A captain.", "catchphrase": "Ahoy!"}] * n,
        "question": ["What do you see?"] * n,
        "history": [""] * n,
    }
    return prompts, completions, kwargs


def make_reward(url, monkeypatch, **kwargs):
    monkeypatch.setenv(KEY_ENV, SECRET)
    backend = OpenAIJudgeBackend(url, "judge", api_key_env=KEY_ENV, timeout=0.5)
    options = dict(max_concurrency=8, max_retries=1, backoff=0.05)
    options.update(kwargs)
    return JudgeReward("mmrole", backend, **options)


def test_scripted_server_ratios_failures_and_counters(judge_server, monkeypatch, caplog):
    url, state = judge_server
    caplog.set_level(logging.DEBUG)  # every logger, every level: the key must not appear anywhere
    reward = make_reward(url, monkeypatch)
    assert reward.__name__ == "judge_reward"
    answers = ["GOOD", "GOOD2", "SLOW", "E500", "GARBAGE", "PARTIAL"]
    prompts, completions, kwargs = mmrole_batch(answers)
    logged = {}
    start = time.perf_counter()
    rewards = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1]] * len(answers),
        trainer_state=None,
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: logged.__setitem__(name, value),
        **kwargs,
    )
    elapsed = time.perf_counter() - start

    good, good2, partial = 56 / 64, 60 / 64, 19 / 26
    mean = (good + good2 + partial) / 3
    assert rewards == pytest.approx([good, good2, mean, mean, mean, partial])
    # Concurrency: the 2 timed-out attempts (0.5 s each) ran alongside the rest, not one request after another.
    assert elapsed < 2.5
    counters = reward.metrics()
    assert counters["judge/judgements"] == 6
    assert counters["judge/failures"] == 3
    assert counters["judge/timeouts"] == 2  # first attempt + 1 retry
    assert counters["judge/request_errors"] == 2  # HTTP 500 is retried once
    assert counters["judge/retries"] == 2
    assert counters["judge/parse_errors"] == 1
    assert counters["judge/partial"] == 1
    assert state["calls"]["E500"] == 2 and state["calls"]["GOOD"] == 1
    assert logged["judge/failures"] == 3 and logged["judge/timeouts"] == 2
    assert logged["judge/failure_rate"] == pytest.approx(0.5)
    # The key was used, and never shows in logs or reprs.
    assert f"Bearer {SECRET}" in state["auth"]
    assert "3 of 6 judgement(s) failed" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(reward) and SECRET not in repr(reward.backend)
    assert KEY_ENV in repr(reward.backend)


def test_all_failed_batch_gets_fallback_and_no_exception(judge_server, monkeypatch):
    url, _ = judge_server
    reward = make_reward(url, monkeypatch, max_retries=0, fallback_reward=0.5)
    prompts, completions, kwargs = mmrole_batch(["GARBAGE", "E500", "GARBAGE"])
    assert reward(prompts, completions, **kwargs) == [0.5, 0.5, 0.5]
    assert reward.metrics()["judge/failures"] == 3
    reward.reset_metrics()
    assert reward.metrics()["judge/failures"] == 0


def test_requests_in_flight_are_limited(judge_server, monkeypatch):
    url, state = judge_server
    reward = make_reward(url, monkeypatch, max_concurrency=2)
    prompts, completions, kwargs = mmrole_batch(["WAIT"] * 6)
    assert reward(prompts, completions, **kwargs) == pytest.approx([56 / 64] * 6)
    assert state["max_in_flight"] == 2


def test_unreachable_judge_fails_at_start_up(monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv(KEY_ENV, SECRET)
    backend = OpenAIJudgeBackend(url, "judge", api_key_env=KEY_ENV, timeout=0.5)
    with pytest.raises(JudgeConnectionError, match=f"127.0.0.1:{port}") as info:
        JudgeReward("mmrole", backend)
    assert "check_connection=False" in str(info.value) and SECRET not in str(info.value)
    JudgeReward("mmrole", backend, check_connection=False)  # the check can be skipped


def test_missing_columns_is_a_clear_error():
    reward = JudgeReward("mmrole", lambda messages: GOOD)
    prompts, completions, kwargs = mmrole_batch(["GOOD"])
    del kwargs["profile"]
    with pytest.raises(ValueError, match=r"\['profile'\]"):
        reward(prompts, completions, **kwargs)
    with pytest.raises(ValueError, match="Unknown rubric"):
        JudgeReward("nope", lambda messages: GOOD)


def test_judge_prompt_holds_conversation_profile_answer_and_reference():
    seen = []
    reward = JudgeReward("mmrole", lambda messages: seen.append(messages) or GOOD)
    prompts, completions, kwargs = mmrole_batch(["My answer."])
    assert reward(prompts, completions, **kwargs) == [pytest.approx(56 / 64)]
    user = seen[0][-1]["content"]
    for text in ("What do you see?", "Captain Rolo", "Ahoy!", "## Response A\nMy answer.", "A reference answer."):
        assert text in user
    for title in TITLES:
        assert title in user


def test_pcogalign_rubric_builds_and_parses():
    seen = []
    pc_titles = [d.title for d in PCOGALIGN_RUBRIC.dimensions]
    answer = "\n".join(f"{t}: ok, A={a}, B=10" for t, a in zip(pc_titles, (5, 6, 7, 8, 9)))
    reward = JudgeReward("pcogalign", lambda messages: seen.append(messages) or answer)
    rewards = reward(
        [[{"role": "user", "content": "How do I calm my son?"}]],
        ["Take a breath."],
        reference=["Golden."],
        role_set=["a Father at Home; a Fireman at Community"],
        query=["How do I calm my son?"],
        eval_info=[{"ImageDesc": "a crying child", "location": "Home", "EvalHelp": "be gentle"}],
    )
    assert rewards == [pytest.approx(35 / 50)]
    system, user = seen[0][0]["content"], seen[0][1]["content"]
    assert "a Father at Home; a Fireman at Community" in system
    for text in ("a crying child", "Home", "be gentle", "How do I calm my son?", "Take a breath.", "Golden."):
        assert text in user


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1. Fluency: good. [Scores]: (7, 8)", {"fluency": (7.0, 8.0)}),
        ("**Fluency**: good (A=7, B=8)", {"fluency": (7.0, 8.0)}),
        ("Fluency - Response A: 7/10, Response B: 9/10", {"fluency": (7.0, 9.0)}),
        ("fluency: scores 6.5, 8", {"fluency": (6.5, 8.0)}),
        ('```json\n{"Fluency": [7, 8], "image-text relevance": {"A": 5, "B": 6}}\n```', None),
        ("Fluency: [Scores]: (7, 80)", {}),  # out of range
        ("[Scores]: (1, 2)\n[Scores]: (3, 4)", {"instruction_adherence": (1.0, 2.0), "fluency": (3.0, 4.0)}),
        ("Totally unrelated text (3, 4).", {}),
    ],
)
def test_parse_variants(text, expected):
    if expected is None:
        expected = {"fluency": (7.0, 8.0), "image_text_relevance": (5.0, 6.0)}
    assert parse_scores(text, MMROLE_RUBRIC.dimensions) == expected


def test_parse_prefers_the_dimension_heading_over_a_mention():
    text = "1. Fluency: smoother than its coherency suggests. [Scores]: (7, 8)\n2. Coherency: weak. [Scores]: (3, 9)"
    assert parse_scores(text, MMROLE_RUBRIC.dimensions) == {"fluency": (7.0, 8.0), "coherency": (3.0, 9.0)}
    assert parse_scores(GOOD, MMROLE_RUBRIC.dimensions) == {d.key: (7.0, 8.0) for d in MMROLE_RUBRIC.dimensions}


def test_local_transformers_judge(tiny_cache):
    from tests.fixtures.models import tiny_lm

    model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
    backend = TransformersJudgeBackend(model, tokenizer, max_new_tokens=6)
    reward = JudgeReward("mmrole", backend, fallback_reward=0.25)
    prompts, completions, kwargs = mmrole_batch(["a", "b"])
    # An untrained model writes no score pairs: every judgement is a parse error and the batch gets the fallback.
    assert reward(prompts, completions, **kwargs) == [0.25, 0.25]
    assert reward.metrics()["judge/parse_errors"] == 2


def test_stock_trl_grpo_with_judge_reward_on_mmrole_data(tiny_cache, tmp_path):
    """TRL's GRPOTrainer passes the loader's columns to the judge reward, and the judge counters reach its logs."""
    from trl import GRPOConfig, GRPOTrainer

    from tests.fixtures.models import tiny_vlm
    from trl_latent.data.mmrole import load_mmrole
    from trl_latent.experiments.shapes.scenes import CHARACTERS
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    write_synthetic_task(tmp_path / "shapes", sessions_per_file=2, ood_sessions_per_character=1)
    dataset = load_mmrole(tmp_path / "shapes", image_size=(56, 56), splits=("rl",))["rl"]
    references = {}
    for character, reference in zip(dataset["character"], dataset["reference"]):
        references.setdefault(character, []).append(reference)
    seen = []

    def judge_fn(messages):
        seen.append(messages[-1]["content"])
        return GOOD if len(seen) % 2 else "garbage"

    model, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
    )
    reward = JudgeReward("mmrole", judge_fn)
    trainer = GRPOTrainer(
        model=model, processing_class=processor, reward_funcs=[reward], args=args, train_dataset=dataset
    )
    trainer.train()
    assert len(seen) == 4
    for user in seen:
        name = next(n for n in CHARACTERS if f"role-play as {n}" in user)
        assert CHARACTERS[name]["catchphrase"] in user and any(ref in user for ref in references[name])
    logs = trainer.state.log_history[0]
    assert logs["judge/failures"] == 2 and logs["judge/failure_rate"] == 0.5
    assert logs["rewards/judge_reward/mean"] == pytest.approx(56 / 64)  # failures get the batch mean


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case("judge/score_below_scale", out_of_scale("(7, 0)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/score_above_scale", out_of_scale("(11, 5)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/negative_score", out_of_scale("(-3, 4)"), fragments=("outside the 1-10 scale",), count=1),
    Case("judge/nan_score", out_of_scale("(NaN, 5)"), fragments=("outside the 1-10 scale",), count=1),
    Case(
        "judge/pcogalign_record_without_evalhelp",
        pcog_without_evalhelp,
        fragments=("record id='p1'", "missing field 'EvalHelp'"),
        count=1,
    ),
    Case("judge/backend_error_quotes_the_key", backend_error_with_key, fragments=("invalid key ***",), count=6),
    Case(
        "judge/start_up_key_rejected",
        judge_answering(401, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_api_key"}}),
        JudgeCheckError,
        (
            "refused the start-up test judgement",
            "HTTP 401 Unauthorized: Incorrect API key provided: ***",
            "valid key in the environment variable JUDGE_API_KEY",
            "check_connection=False",
        ),
    ),  # fmt: skip
    Case(
        "judge/start_up_no_permission",
        judge_answering(403, {"error": {"message": "You are not allowed to sample from this model"}}),
        JudgeCheckError,
        ("HTTP 403 Forbidden: You are not allowed to sample from this model", "not allowed to use model 'judge'"),
    ),
    Case(
        "judge/start_up_unknown_model",
        judge_answering(404, {"object": "error", "message": "The model `judge` does not exist.", "code": 404}),
        JudgeCheckError,
        (
            "HTTP 404 Not Found: The model `judge` does not exist",
            "has no model 'judge'",
            "The server lists: ['served-judge']",
            "Fix judge_model (--judge_model)",
        ),
    ),  # fmt: skip
    Case(
        "judge/start_up_unreadable_answer",
        judge_answering(200, chat_answer("Both responses are lovely; I would not want to rank them.")),
        JudgeCheckError,
        ("no score pair could be read from its answer", "I would not want to rank them", "[Scores]: (A, B)"),
    ),
]


test_bad_input = bad_input_test(BAD_INPUT)
