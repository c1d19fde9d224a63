"""A judge that fails, tried as a new user meets it: a rejected key, an unknown model or an unreadable answer fails at
start-up (one real test judgement), and a judge that dies mid-run (or a reward that returns None) saves a checkpoint
and stops the run with the reasons and counts, while transient failures still train to the end. The judge is an
OpenAI-compatible HTTP server on 127.0.0.1, scripted per request."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trl_latent.rewards.judge import MMROLE_RUBRIC, JudgeCheckError, JudgeReward, OpenAIJudgeBackend
from trl_latent.training.reward_failures import RewardFailureError, RewardFailureMonitor

SECRET = "sk-test-FAILURES-0123456789abcdef"
KEY_ENV = "TRL_LATENT_TEST_FAILURES_KEY"
TRAIN = dict(
    per_device_train_batch_size=4,  # one prompt x 4 generations per step: one generation batch of 4 judgements
    num_generations=4,
    max_completion_length=4,
    gradient_accumulation_steps=1,
    max_steps=8,
    use_cpu=True,
    bf16=False,
    report_to="none",
    logging_steps=1,
    save_strategy="no",  # the stop saves its checkpoint anyway
)


# ------------------------------------------------------------------------------------------------ the judge server
def scores_answer(user: str) -> str:
    """All eight MMRole dimensions, scored by a hash of the prompt so different answers get different rewards."""
    score = 1 + sum(user.encode()) % 9
    return "\n".join(f"{i}. {d.title}: ok. [Scores]: ({score}, 8)" for i, d in enumerate(MMROLE_RUBRIC.dimensions, 1))


def completion(content: str) -> tuple[int, dict]:
    message = {"role": "assistant", "content": content}
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "judge",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


GOOD = lambda n, user: completion(scores_answer(user))  # noqa: E731
UNAUTHORIZED = (401, {"error": {"message": f"Incorrect API key provided: {SECRET}.", "type": "invalid_request_error"}})
NOT_FOUND = (404, {"object": "error", "message": "The model `judge` does not exist.", "type": "NotFoundError"})
UNREADABLE = completion("I am sorry, but as an AI language model I cannot rate these responses.")
SERVER_ERROR = (500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
UNAVAILABLE = (503, {"error": {"message": "the engine is busy", "type": "server_error"}})


class Judge(BaseHTTPRequestHandler):
    """`script(n, user_prompt) -> (status, payload)` answers the n-th chat request (0-based); `/models` lists one."""

    state: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "served-judge", "object": "model", "owned_by": "t"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.state["lock"]:
            n = self.state["requests"]
            self.state["requests"] += 1
        status, payload = self.state["script"](n, request["messages"][-1]["content"])
        self._send(status, payload)


@pytest.fixture
def judge(monkeypatch):
    """Start a scripted judge: `url = judge(script)`; `judge.state["requests"]` counts its chat requests."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    servers = []

    def start(script) -> str:
        state = {"lock": threading.Lock(), "requests": 0, "script": script}
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Judge,), {"state": state}))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        start.state = state
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def constant(answer):
    return lambda n, user: answer


def after(good_requests: int, then):
    """Good answers for the first `good_requests` requests, then `then` (a fixed answer) for every request."""
    return lambda n, user: GOOD(n, user) if n < good_requests else then


def judge_reward(url: str, **kwargs) -> JudgeReward:
    backend = OpenAIJudgeBackend(url, "judge", api_key_env=KEY_ENV, timeout=5.0)
    return JudgeReward("mmrole", backend, **{"max_retries": 1, "backoff": 0.01, **kwargs})


# ------------------------------------------------------------------------------------------------ start-up check
@pytest.mark.parametrize(
    "answer, fragments",
    [
        (
            UNAUTHORIZED,
            ("refused the start-up test judgement", "HTTP 401 Unauthorized", "Incorrect API key provided: ***",
             f"environment variable {KEY_ENV}", "check_connection=False"),
        ),
        (
            NOT_FOUND,
            ("HTTP 404 Not Found", "The model `judge` does not exist", "has no model 'judge'",
             "The server lists: ['served-judge']", "--judge_model"),
        ),
        (
            UNREADABLE,
            ("no score pair could be read from its answer", "as an AI language model I cannot rate",
             "[Scores]: (A, B)", "instruction-following chat model"),
        ),
    ],
    ids=["401", "404", "unreadable"],
)  # fmt: skip
def test_start_up_check_fails_naming_what_the_judge_answered(judge, answer, fragments):
    url = judge(constant(answer))
    with pytest.raises(JudgeCheckError) as info:
        judge_reward(url)
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in: {message}"
    assert SECRET not in message
    assert judge.state["requests"] == 1  # one real judgement; a refusal is not retried
    assert info.value.status == (answer[0] if answer[0] != 200 else None)
    judge_reward(url, check_connection=False)  # the check can be skipped: nothing is sent
    assert judge.state["requests"] == 1


def test_start_up_check_retries_transient_failures_and_sends_the_rubric_prompt(judge, caplog):
    seen = []

    def script(n, user):
        seen.append(user)
        return UNAVAILABLE if n == 0 else GOOD(n, user)

    reward = judge_reward(judge(script))  # 503 once, retried, then a good answer
    assert judge.state["requests"] == 2
    assert "## Response A\n" in seen[0] and "[Scores]: (<score of Response A>" in seen[0]
    assert all(v == 0 for v in reward.metrics().values())  # the check is not counted as training judgements

    caplog.set_level(logging.WARNING)
    judge_reward(judge(constant(UNAVAILABLE)))  # a judge still busy after the retries: start, with a warning
    assert "did not answer the start-up test judgement" in caplog.text and "HTTP 503" in caplog.text
    assert SECRET not in caplog.text


def test_the_command_fails_at_start_up_before_any_model_is_loaded(judge, shapes, tmp_path, capsys, monkeypatch):
    from trl_latent.cli import main
    from trl_latent.modeling.model import LatentActionModel

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the judge was checked")

    monkeypatch.setattr(LatentActionModel, "from_pretrained", classmethod(refuse))
    model = tmp_path / "stage5"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "latent_action"}))
    argv = ["grpo", "--model_name_or_path", str(model), "--task", "mmrole", "--task_root", str(shapes)]
    argv += ["--image_size", "56", "56", "--judge_model", "judge", "--judge_api_key_env", KEY_ENV, "--use_cpu", "true"]
    assert main([*argv, "--judge_base_url", judge(constant(UNAUTHORIZED))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trl-latent grpo: error:" in err and "HTTP 401 Unauthorized" in err and "--judge_api_key_env" in err
    assert SECRET not in err


# ------------------------------------------------------------------------------------------------ the count
def test_the_monitor_counts_only_batches_in_a_row():
    monitor = RewardFailureMonitor(3)
    failed = [("judge_reward", 4, 4, {"HTTP 401 Unauthorized": 4}, {"HTTP 401 Unauthorized": "judge said 401"})]
    partly = [("judge_reward", 4, 3, {"timeout": 3}, {"timeout": "slow"})]
    for reports in (failed, failed, partly, failed, failed):  # one good judgement resets the count
        monitor.observe(4, False, reports, ["judge_reward"])
    assert not monitor.stop_requested
    monitor.observe(4, False, failed, ["judge_reward"])
    assert monitor.stop_requested
    message = monitor.message(7, "out/checkpoint-7")
    assert "the judge failed every judgement of the last 3 batches (12 of 12: HTTP 401 Unauthorized x12)" in message
    assert "resume_from_checkpoint=out/checkpoint-7" in message and "judge said 401" in message
    never = RewardFailureMonitor(0)
    for _ in range(5):
        never.observe(4, True, [], ["f"])
    assert not never.stop_requested
    with pytest.raises(ValueError, match="max_failed_reward_batches must be >= 0"):
        RewardFailureMonitor(-1)


# ------------------------------------------------------------------------------------------------ mid-run
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_task(root, sessions_per_file=2, ood_sessions_per_character=1, n_paired=8, n_text_only=8)
    return root


def rl_prompts(n: int = 8):
    """The shapes task's RL prompts with the columns the MMRole judge reads."""
    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset

    dataset = synthetic_rl_dataset(n)
    return dataset.add_column("profile", [{"introduction": f"{c}, a shape expert."} for c in dataset["character"]])


def latent_trainer(tiny_cache, out: Path, reward, **config):
    import torch

    from tests.fixtures.models import tiny_vlm, tiny_vlm_path
    from trl_latent import LatentActionModel, LatentGRPOConfig, LatentGRPOTrainer

    torch.manual_seed(0)
    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(path, codebook_size=8, inverse_layers=1, policy_layers=1)
    args = LatentGRPOConfig(str(out), **{**TRAIN, **config})
    processor = tiny_vlm("tiny", cache_dir=tiny_cache)[1]
    return LatentGRPOTrainer(
        model, reward_funcs=reward, args=args, train_dataset=rl_prompts(), processing_class=processor
    )


def assert_checkpoint(folder: Path, step: int) -> None:
    assert (folder / "trainer_state.json").is_file(), sorted(p.name for p in folder.parent.iterdir())
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == step


def test_latent_run_stops_with_a_checkpoint_when_the_judge_starts_failing(judge, tiny_cache, tmp_path):
    # The start-up check, then two good batches (4 judgements each); then HTTP 500 to every request (retried once).
    url = judge(after(1 + 2 * 4, SERVER_ERROR))
    trainer = latent_trainer(tiny_cache, tmp_path / "out", judge_reward(url), max_failed_reward_batches=2)
    with pytest.raises(RewardFailureError) as info:
        trainer.train()
    message = str(info.value)
    assert trainer.state.global_step == 4 < TRAIN["max_steps"]  # 2 good batches + 2 failed ones
    assert_checkpoint(tmp_path / "out" / "checkpoint-4", 4)
    assert info.value.checkpoint == str(tmp_path / "out" / "checkpoint-4")
    assert "Training stopped at step 4" in message
    assert (
        "the judge failed every judgement of the last 2 batches (8 of 8: HTTP 500 Internal Server Error x8)" in message
    )
    assert "CUDA out of memory" in message and f"resume_from_checkpoint={info.value.checkpoint}" in message
    assert judge.state["requests"] == 1 + 2 * 4 + 2 * 4 * 2  # each failed judgement was tried twice
    logged = [entry for entry in trainer.state.log_history if "judge/failure_rate" in entry]
    assert [entry["judge/failure_rate"] for entry in logged] == [0.0, 0.0, 1.0, 1.0]


def test_transient_judge_failures_still_train_to_the_end(judge, tiny_cache, tmp_path):
    # Every third request is refused with 503 (not retried: max_retries=0): batches lose a judgement or two, never all.
    url = judge(lambda n, user: UNAVAILABLE if n % 3 == 2 else GOOD(n, user))
    trainer = latent_trainer(tiny_cache, tmp_path / "out", judge_reward(url, max_retries=0), max_steps=4)
    trainer.train()
    assert trainer.state.global_step == 4
    failures = [entry["judge/failures"] for entry in trainer.state.log_history if "judge/failures" in entry]
    assert len(failures) == 4 and sum(failures) >= 4 and max(failures) < 4  # each batch kept a good judgement
    assert not (tmp_path / "out" / "checkpoint-4").exists()  # no stop, no save (save_strategy="no")


def test_a_reward_returning_none_for_every_completion_stops_the_run(tiny_cache, tmp_path):
    from trl import GRPOConfig

    from tests.fixtures.models import tiny_vlm
    from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer

    calls = []

    def no_reward(completions, **kwargs):
        calls.append(len(completions))
        return [None] * len(completions)

    model, processor = tiny_vlm("tiny", cache_dir=tiny_cache)
    args = GRPOConfig(str(tmp_path / "out"), **TRAIN)
    trainer = TokenGRPOTrainer(
        model, reward_funcs=no_reward, args=args, train_dataset=rl_prompts(), processing_class=processor
    )  # max_failed_reward_batches: the default, 3
    with pytest.raises(RewardFailureError) as info:
        trainer.train()
    assert calls == [4, 4, 4] and trainer.state.global_step == 3
    assert_checkpoint(tmp_path / "out" / "checkpoint-3", 3)
    message = str(info.value)
    assert "every reward function returned None for every completion of 3 of the last 3 batches" in message
    assert "(12 of 12 completions without a reward)" in message and "fix the reward function" in message


def test_token_command_stops_with_exit_status_1_when_the_judge_starts_refusing(judge, shapes, tiny_cache, tmp_path,
                                                                                capsys):  # fmt: skip
    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.cli import main

    url = judge(after(1 + 2 * 4, UNAUTHORIZED))  # the key is revoked after two batches
    out = tmp_path / "token_grpo"
    tiny = str(tiny_vlm_path("tiny", cache_dir=tiny_cache))
    argv = ["grpo", "--action_space", "token", "--model_name_or_path", tiny]
    argv += ["--task", "mmrole", "--task_root", str(shapes), "--image_size", "56", "56", "--reward_funcs", "judge"]
    argv += ["--judge_base_url", url, "--judge_model", "judge", "--judge_api_key_env", KEY_ENV, "--judge_timeout", "5"]
    argv += ["--output_dir", str(out)]
    for key, value in TRAIN.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    assert main(argv) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "trl-latent grpo: error: Training stopped at step 5" in err
    assert "the judge failed every judgement of the last 3 batches (12 of 12: HTTP 401 Unauthorized x12)" in err
    assert f"resume_from_checkpoint={out / 'checkpoint-5'}" in err and SECRET not in err
    assert_checkpoint(out / "checkpoint-5", 5)
    assert judge.state["requests"] == 1 + 2 * 4 + 3 * 4  # a 401 is not retried
