"""The paper's settings that the library takes as its defaults, each defined here once.

The configs (`LatentActionConfig`, `LatentSFTConfig`, `LatentGRPOConfig`), the functions (`latent_generate`,
`evaluate`) and the commands (`sft`, `grpo`, `eval`, `plan`) read their defaults from this module. It imports nothing,
so the command line builds its parsers without loading torch. docs/architecture.md section 3 says where the project
departs from these and why.
"""

# The latent action space: |C| codes, the inverse dynamics model's and the policy's decoder layers.
CODEBOOK_SIZE = 128
INVERSE_LAYERS = 4
POLICY_LAYERS = 8
# Stage 5 (world-model SFT) trains the base's last this-many language-model layers.
WORLD_SFT_LAST_LAYERS = 8

# RL (stage 6): each step's code is sampled at temperature 1 among the policy's 32 most likely codes, the world model
# takes its next token greedily, and the KL to the reference policy is weighted by this beta.
ROLLOUT_CODE_TOP_K = 32
ROLLOUT_CODE_TEMPERATURE = 1.0
TOKEN_STRATEGY = "greedy"
KL_BETA = 0.01

# Evaluation: 3 generations per test prompt, codes (latent) or tokens (plain VLM) sampled at temperature 0.1 among the
# top 64; the score is the mean +/- sample std over the 3 rounds.
PAPER_EVAL_GENERATIONS = 3
PAPER_EVAL_TEMPERATURE = 0.1
PAPER_EVAL_TOP_K = 64
