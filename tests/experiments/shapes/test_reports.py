"""`experiments.shapes.reports`: the study's tables (mean and sample std over seeds) and its claims checked against the
cells."""

from trl_latent.experiments.shapes.study import grid


def _cell(loss, method, seed, reward, ablation="full", health=None):
    ev = {"all": reward / 2, "reward": reward, "diversity/distinct_2": 0.5, "diversity/self_bleu": 0.25}
    return {
        "name": f"{loss}-{method}-s{seed}",
        "loss": loss,
        "method": method,
        "ablation": ablation,
        "seed": seed,
        "eval": {"id": ev, "ood": {**ev, "reward": reward - 0.5}, "held_out": {**ev, "reward": reward - 0.25}},
        "health": health or {},
    }


def test_tables_give_mean_and_sample_std_over_seeds():
    from trl_latent.experiments.shapes.reports import format_ablation_table, format_health_table, format_main_table

    cells = [_cell("dapo", "latent", s, r) for s, r in enumerate((0.6, 0.8, 1.0))]
    cells += [_cell("grpo", "token", 0, 0.7), _cell("grpo", "latent", 0, 0.9, "no_projector")]
    rows = format_main_table(cells).splitlines()
    assert rows[0].startswith(
        "| loss | method | seeds | ID accuracy | ID reward | OOD accuracy | OOD reward | held-out"
    )
    # Rows in the paper's order (grpo before dapo); the ablated cell is not a main row; std is the sample std.
    assert rows[2] == (
        "| grpo | token | 1 | 0.350 ± 0.000 | 0.700 ± 0.000 | 0.350 ± 0.000 | 0.200 ± 0.000 | 0.350 ± 0.000 "
        "| 0.450 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 | n/a |"
    )
    assert rows[3] == (
        "| dapo | latent | 3 | 0.400 ± 0.100 | 0.800 ± 0.200 | 0.400 ± 0.100 | 0.300 ± 0.200 | 0.400 ± 0.100 "
        "| 0.550 ± 0.200 | 0.500 ± 0.000 | 0.250 ± 0.000 | n/a |"
    )
    assert len(rows) == 4
    assert (
        format_ablation_table(cells).splitlines()[2].startswith("| grpo | without the projector | 1 | 0.450 ± 0.000")
    )
    assert format_health_table(cells) == ""
    health = [{"world_sft": {"reachability": v, "codes_used": 4}} for v in (0.5, 0.7)]
    table = format_health_table([_cell("grpo", "latent", s, 0.5, health=h) for s, h in enumerate(health)])
    assert (
        "| world_sft.reachability | 0.600 ± 0.141 |" in table and "| world_sft.codes_used | 4.000 ± 0.000 |" in table
    )
    # The pipeline's paths read as "stage: metric"; losses sharing one latent model share one column.
    health = {"stages.joint.health": {"health/controllability": 1.5}}
    shared = [_cell(loss, "latent", 0, 0.5, health=health) for loss in ("grpo", "dapo")]
    shared.append(_cell("grpo", "latent", 0, 0.5, "no_projector", health={"stages.joint.health": {"health/x": 1}}))
    rows = format_health_table(shared).splitlines()
    assert rows[0] == "| health entry | grpo = dapo | grpo, no_projector |"
    assert (
        rows[2] == "| joint: controllability | 1.500 ± 0.000 | n/a |"
        and rows[3] == "| joint: x | n/a | 1.000 ± 0.000 |"
    )


LOSS_NAMES = ("grpo", "dr_grpo", "dapo", "bnpo")


def _claim_cell(loss, method, seed, *, ablation="full", rl_all=0.5, reward=0.8, ood=0.5, held_out=0.5, bleu=0.3,
                emb=1.0, seconds=400.0):  # fmt: skip
    """A study cell as the study writes it, with what `check_claims` reads (token SFT's ID all-correct 0.3/0.4/0.5 by
    seed, base answer tokens 0.7, latent content controllability 3.5)."""
    sft_all = 0.3 + 0.1 * seed
    after = {"all": rl_all, "reward": reward, "diversity/self_bleu": bleu, "diversity/embedding": emb}
    cell = {
        "name": f"{loss}-{method}-s{seed}",
        "loss": loss,
        "method": method,
        "ablation": ablation,
        "seed": seed,
        "config": {"size": "small", "rl_micro_batches": 2, "rl_iterations": 2},
        "seconds": seconds,
        "eval": {"id": after, "ood": {**after, "reward": ood}, "held_out": {**after, "reward": held_out}},
        "eval_start": {split: {"all": sft_all, "reward": 0.6} for split in ("id", "ood", "held_out")},
        "base": {"pretrain": {"answer_token_accuracy": 0.7}, "eval_base": {"id": {"all": 0.1, "reward": 0.2}}},
        "health": {},
    }
    if method == "latent":
        health = {"health/content_controllability": 3.5, "health/content_controllability/colour": 4.0}
        cell["health"] = {"stages.world_sft.health": {**health, "health/content_controllability/shape": 3.0}}
    else:
        cell["arm"] = {"sft": {"answer_token_accuracy": 0.9}}
        cell["baseline"] = {"sft": {"answer_token_accuracy": 0.8}, "eval_sft": {"held_out": {"reward": 0.1 * seed}}}
    return cell


def _claim_grid(seeds=(0, 1, 2)):
    """The full grid: token SFT -> GRPO gains 0.1 ID all-correct; latent beats token on ID reward for grpo, dr_grpo
    and dapo (not bnpo), on OOD reward only for grpo, never on the held-out combinations; latent rollouts are more
    diverse (self-BLEU 0.2 vs 0.3, embedding 1.2 vs 1.0); without the projector is better on OOD than the full model,
    without the cycle loss worse; 33 cells of 400 s."""
    cells = []
    for seed in seeds:
        for loss in LOSS_NAMES:
            cells.append(_claim_cell(loss, "token", seed, rl_all=0.4 + 0.1 * seed, reward=0.8, ood=0.5))
            latent_reward = 0.7 if loss == "bnpo" else 0.9
            latent_ood = 0.6 if loss == "grpo" else 0.4
            cells.append(
                _claim_cell(
                    loss, "latent", seed, reward=latent_reward, ood=latent_ood, held_out=0.4, bleu=0.2, emb=1.2
                )
            )
        for ablation, ood in (("no_cycle_loss", 0.5), ("no_projector", 0.7), ("no_text_only", 0.6)):
            cells.append(_claim_cell("grpo", "latent", seed, ablation=ablation, ood=ood))
    for cell in cells:  # a number no claim reads, so that no two losses' runs coincide
        cell["eval"]["id"]["task_reward"] = LOSS_NAMES.index(cell["loss"]) / 10
    return cells


def test_claims_are_the_targets_computed_from_the_cells():
    from trl_latent.experiments.shapes.reports import check_claims, format_claims

    cells = _claim_grid()
    assert len(cells) == len(grid())
    claims = {target: (measured, verdict) for target, measured, verdict in check_claims(cells)}
    assert claims == {
        "RL has room: token SFT's ID all-correct between 0.2 and 0.7": ("0.400 ± 0.100 (3 seeds)", "met"),
        "RL has room: token GRPO raises ID all-correct by at least 0.05": (
            "0.400 -> 0.500, gain +0.100 ± 0.000 (3 seeds)",
            "met",
        ),
        "base alone: at most 0.6 of answer tokens on task dialogues": ("0.700 ± 0.000 (3 seeds)", "missed"),
        "codes steer: content-position controllability after stage 5 of at least 3 right-kind words": (
            "3.50 ± 0.00 (colour 4.00, shape 3.00, 3 seeds)",
            "met",
        ),
        "codes steer: latent self-BLEU at or below token's (ID)": (
            "latent - token -0.100 ± 0.000 (3 seeds), mean over 4 losses",
            "met",
        ),
        "codes steer: latent embedding diversity at or above token's (ID)": (
            "latent - token +0.200 ± 0.000 (3 seeds), mean over 4 losses",
            "met",
        ),
        "final ID reward of latent >= token for at least 3 of the 4 losses": (
            "latent - token per loss: grpo +0.100 ± 0.000 (3 seeds): met; dr_grpo +0.100 ± 0.000 (3 seeds): met; "
            "dapo +0.100 ± 0.000 (3 seeds): met; bnpo -0.100 ± 0.000 (3 seeds): missed",
            "met",
        ),
        "final OOD reward of latent >= token for at least 3 of the 4 losses": (
            "latent - token per loss: grpo +0.100 ± 0.000 (3 seeds): met; dr_grpo -0.100 ± 0.000 (3 seeds): missed; "
            "dapo -0.100 ± 0.000 (3 seeds): missed; bnpo -0.100 ± 0.000 (3 seeds): missed",
            "missed",
        ),
        "rollout embedding diversity of latent >= 1.15x token": (
            "latent / token 1.200 ± 0.000 (3 seeds), mean over 4 losses",
            "met",
        ),
        "latent >= token on the held-out combinations (reward)": (
            "latent - token -0.100 ± 0.000 (3 seeds), mean over 4 losses",
            "missed",
        ),
        "latent >= token on the OOD characters (reward)": (
            "latent - token -0.050 ± 0.000 (3 seeds), mean over 4 losses",
            "missed",
        ),
        "full latent model >= without the cycle loss on OOD reward (grpo)": (
            "full - ablated +0.100 ± 0.000 (3 seeds)",
            "met",
        ),
        "full latent model >= without the projector on OOD reward (grpo)": (
            "full - ablated -0.100 ± 0.000 (3 seeds)",
            "missed",
        ),
        # Equal on every seed: not a win.
        "full latent model >= without text-only data on OOD reward (grpo)": (
            "full - ablated +0.000 ± 0.000 (3 seeds)",
            "within noise",
        ),
        "the full study in at most 2 hours as 2 processes": (
            "1.83 h (all cells' time 3.67 h / 2, 33 cells)",
            "met",
        ),
        "one cell at smoke size (`--quick`), as CI runs it": (
            "no smoke-size cells here (CI runs two in tests/experiments/shapes/test_study.py)",
            "n/a",
        ),
    }
    assert (
        "| base alone: at most 0.6 of answer tokens on task dialogues | 0.700 ± 0.000 (3 seeds) | missed |"
        in format_claims(cells)
    )

    # Shifted numbers flip the verdicts: too much SFT leaves RL no room, a slow grid misses its time.
    for cell in cells:
        cell["seconds"] = 500.0
        if cell["method"] == "token":
            cell["eval_start"]["id"]["all"] = 0.8
    claims = {target: (measured, verdict) for target, measured, verdict in check_claims(cells)}
    assert claims["RL has room: token SFT's ID all-correct between 0.2 and 0.7"] == (
        "0.800 ± 0.000 (3 seeds)",
        "missed",
    )
    assert claims["RL has room: token GRPO raises ID all-correct by at least 0.05"][1] == "missed"
    assert claims["the full study in at most 2 hours as 2 processes"] == (
        "2.29 h (all cells' time 4.58 h / 2, 33 cells)",
        "missed",
    )
    # Missing cells cannot decide: an unfinished grid, fewer than 4 losses, no latent health, smoke-size cells.
    some = [c for c in cells if c["loss"] in ("grpo", "dapo") and c["ablation"] == "full"]
    for cell in some:
        cell["health"] = {}
    claims = {target: (measured, verdict) for target, measured, verdict in check_claims(some)}
    assert claims["final OOD reward of latent >= token for at least 3 of the 4 losses"] == (
        "latent - token per loss: grpo +0.100 ± 0.000 (3 seeds): met; dapo -0.100 ± 0.000 (3 seeds): missed",
        "n/a",
    )
    assert claims["codes steer: content-position controllability after stage 5 of at least 3 right-kind words"] == (
        "n/a (0 seeds)",
        "n/a (no values)",
    )
    assert claims["the full study in at most 2 hours as 2 processes"] == (
        "0.83 h (all cells' time 1.67 h / 2, 12 cells of 33: grid not finished)",
        "n/a",
    )
    smoke = [{**c, "config": {**c["config"], "size": "tiny"}} for c in some[:2]]
    claims = {target: (measured, verdict) for target, measured, verdict in check_claims(smoke)}
    assert claims["one cell at smoke size (`--quick`), as CI runs it"] == (
        "slowest of 2 smoke-size cells 500 s",
        "met",
    )
    assert claims["the full study in at most 2 hours as 2 processes"][1] == "n/a"


def _set_reward(cells, loss, method, split, by_seed):
    for cell in cells:
        if (cell["loss"], cell["method"], cell["ablation"]) == (loss, method, "full"):
            cell["eval"][split] = {**cell["eval"][split], "reward": by_seed[cell["seed"]]}


def test_claims_respect_the_seed_noise():
    """Planted cells: a difference inside the noise is "within noise" (never "met"), a clear win "met", a clear loss
    "missed"; one seed gives no verdict."""
    from trl_latent.experiments.shapes.reports import check_claims

    target = "latent >= token on the held-out combinations (reward)"
    cells = _claim_grid()
    for loss in LOSS_NAMES:
        _set_reward(cells, loss, "token", "held_out", {0: 0.90, 1: 0.95, 2: 0.85})
        # The study's situation: latent ahead by 0.001-0.008 on average, seeds disagreeing, std of 0.03-0.05.
        _set_reward(cells, loss, "latent", "held_out", {0: 0.94, 1: 0.91, 2: 0.86})
    claims = {t: (m, v) for t, m, v in check_claims(cells)}
    assert claims[target] == ("latent - token +0.003 ± 0.040 (3 seeds), mean over 4 losses", "within noise")
    for loss in LOSS_NAMES:  # every seed ahead, by more than two standard errors: a clear win
        _set_reward(cells, loss, "latent", "held_out", {0: 0.95, 1: 0.99, 2: 0.91})
    assert {t: v for t, _, v in check_claims(cells)}[target] == "met"
    for loss in LOSS_NAMES:  # every seed behind: a clear loss
        _set_reward(cells, loss, "latent", "held_out", {0: 0.80, 1: 0.86, 2: 0.77})
    assert {t: v for t, _, v in check_claims(cells)}[target] == "missed"
    # Every seed ahead but by amounts that vary more than the mean (0.001, 0.002, 0.05): not cleared.
    for loss in LOSS_NAMES:
        _set_reward(cells, loss, "latent", "held_out", {0: 0.901, 1: 0.952, 2: 0.90})
    assert {t: v for t, _, v in check_claims(cells)}[target] == "within noise"
    # Per loss: 2 wins and 2 within noise is not "3 of 4".
    target = "final ID reward of latent >= token for at least 3 of the 4 losses"
    for loss, latent in zip(LOSS_NAMES, ({0: 0.9, 1: 0.9, 2: 0.9},) * 2 + ({0: 0.85, 1: 0.75, 2: 0.8},) * 2):
        _set_reward(cells, loss, "latent", "id", latent)
    verdicts = {t: v for t, _, v in check_claims(cells)}
    assert verdicts[target] == "within noise"
    one_seed = [c for c in cells if c["seed"] == 0]
    assert {t: v for t, _, v in check_claims(one_seed)}["latent >= token on the OOD characters (reward)"] == (
        "n/a (one seed)"
    )


def test_report_tables_show_every_split_the_baseline_and_coinciding_losses():
    from trl_latent.experiments.shapes.reports import coinciding_losses, format_gain_table, format_start_table

    cells = _claim_grid(seeds=(0, 1))
    rows = format_gain_table(cells).splitlines()
    assert rows[0].count("before RL") == 3 and "held-out combos gain" in rows[0]
    # grpo token: before 0.6 on every split; after ID 0.8, OOD 0.5, held-out 0.5.
    assert rows[2] == (
        "| grpo | token | 2 | 0.600 ± 0.000 | 0.800 ± 0.000 | 0.200 ± 0.000 | 0.600 ± 0.000 | 0.500 ± 0.000 "
        "| -0.100 ± 0.000 | 0.600 ± 0.000 | 0.500 ± 0.000 | -0.100 ± 0.000 |"
    )
    table = format_start_table(cells).splitlines()
    labels = [row.split(" | ")[0].removeprefix("| ") for row in table[2:]]
    assert labels == [
        "base (general pretraining)",
        "token: SFT",
        "token: SFT with the text-only corpus (more-data baseline)",
        "latent: stages 1-5",
    ]
    assert table[0].endswith("| answer tokens |")
    # One entry per seed (4 losses' token cells share one SFT model): 2 seeds; the baseline's held-out reward 0 / 0.1.
    baseline = table[4].split(" | ")
    assert baseline[1] == "2" and baseline[7] == "0.050 ± 0.071" and baseline[-1] == "0.800 ± 0.000 |"
    assert table[2].split(" | ")[-1] == "0.700 ± 0.000 |" and table[5].split(" | ")[-1] == "n/a |"
    assert format_start_table([]) == ""

    # No two losses coincide here; identical DAPO and BNPO runs are a finding
    # under the study's schedule, and expected only with one on-policy step per generation batch.
    assert coinciding_losses(cells) == []
    twins = [_claim_cell(loss, "token", 0) for loss in ("dapo", "bnpo")]
    assert coinciding_losses(twins) == [
        "dapo and bnpo gave identical held-out numbers in all 1 cells they share under a schedule where their "
        "updates should differ (2 micro-batches x 2 passes per generation batch): a finding to examine, not two "
        "independent results."
    ]
    for twin in twins:
        twin["config"].update(rl_micro_batches=1, rl_iterations=1)
    assert "expected with one on-policy optimisation step per generation batch" in coinciding_losses(twins)[0]
    twins[0]["eval"] = {"id": {"reward": 0.1}}
    assert coinciding_losses(twins) == []
