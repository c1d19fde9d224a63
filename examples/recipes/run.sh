#!/usr/bin/env bash
# Build a latent action model from Qwen2.5-VL, tune it on a task with latent-action RL, train the token-level
# baseline the same way, and evaluate all four models. Run it from the folder that holds data/ (the YAMLs read
# data/... and write outputs/... relative to it), e.g. the repository root:
#
#   examples/recipes/run.sh qwen2.5-vl-3b mmrole        # or: qwen2.5-vl-7b, pcogalign
#
# Stages, in order (each one `accelerate launch` of a trl-latent command on one YAML of the recipe):
#   1-4  trl-latent sft   <model>/{1_inverse_warmup,2_projector_warmup,3_joint,4_policy_bc}.yaml   (shared by tasks)
#   5    trl-latent sft   <model>/<task>/5_world_sft.yaml
#   6    trl-latent grpo  <model>/<task>/6_grpo.yaml
#   token baseline: trl-latent sft <model>/<task>/token_sft.yaml, trl-latent grpo <model>/<task>/token_grpo.yaml
#   eval trl-latent eval  <model>/<task>/eval.yaml
# A stage whose output_dir already holds a saved model is skipped, so a second run resumes after the last finished
# stage (delete a stage's output_dir to run it again); a stage that was interrupted (Ctrl-C or SIGTERM save a
# checkpoint and stop it) resumes from its newest complete checkpoint.
#
# Environment:
#   LAUNCHER=accelerate (default) or python (one process, no accelerate: one GPU or the CPU)
#   ACCELERATE_PRETRAIN, ACCELERATE_WORLD_SFT, ACCELERATE_RL, ACCELERATE_TOKEN_SFT, ACCELERATE_TOKEN_RL: the
#     accelerate config (a name in examples/accelerate_configs/) of each kind of stage; defaults per model below
#   NUM_GPUS, GPU_MEMORY (GiB per GPU): when both are set, `trl-latent plan` first checks that every latent stage fits
#     its accelerate config on these GPUs, and the recipe stops before any stage runs if one does not
#   SFT_ARGS, GRPO_ARGS, EVAL_ARGS: extra arguments for every sft, grpo or eval command, e.g.
#     GRPO_ARGS="--judge_base_url http://judge-host:8000/v1" EVAL_ARGS="--judge_base_url http://judge-host:8000/v1"
set -euo pipefail

MODEL=${1:?usage: examples/recipes/run.sh MODEL TASK   (MODEL: qwen2.5-vl-3b or qwen2.5-vl-7b; TASK: mmrole or pcogalign)}
TASK=${2:?usage: examples/recipes/run.sh MODEL TASK   (TASK: mmrole or pcogalign)}
HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$HERE/$MODEL
CONFIGS=$HERE/../accelerate_configs
LAUNCHER=${LAUNCHER:-accelerate}
PYTHON=${PYTHON:-python}

[ -d "$HERE/$MODEL" ] || { echo "run.sh: no recipe $HERE/$MODEL (choose qwen2.5-vl-3b or qwen2.5-vl-7b)" >&2; exit 2; }
[ -d "$HERE/$MODEL/$TASK" ] || { echo "run.sh: no task $TASK in $HERE/$MODEL (choose mmrole or pcogalign)" >&2; exit 2; }

# config_value YAML KEY: a key of a recipe with what it `extends` merged in (the 7B recipes extend the 3B ones).
config_value() {
  "$PYTHON" -c 'import sys; from trl_latent.commands.parsing import load_config; print(load_config(sys.argv[1]).get(sys.argv[2]) or "")' "$1" "$2"
}

# Which parallelism each kind of stage uses. Stages 1-4 and latent RL train small modules next to a frozen base;
# the world-model SFT and the token baseline train most of the base. `trl-latent plan` estimates the memory of each.
case $MODEL in
  qwen2.5-vl-3b) defaults=(ddp zero2 ddp zero2 zero3) ;;
  qwen2.5-vl-7b) defaults=(zero2 zero3_offload zero2 zero3_offload zero3) ;;
  *) defaults=(zero2 zero3_offload zero2 zero3_offload zero3) ;;
esac
ACCELERATE_PRETRAIN=${ACCELERATE_PRETRAIN:-${defaults[0]}}
ACCELERATE_WORLD_SFT=${ACCELERATE_WORLD_SFT:-${defaults[1]}}
ACCELERATE_RL=${ACCELERATE_RL:-${defaults[2]}}
ACCELERATE_TOKEN_SFT=${ACCELERATE_TOKEN_SFT:-${defaults[3]}}
ACCELERATE_TOKEN_RL=${ACCELERATE_TOKEN_RL:-${defaults[4]}}

# Before anything runs: does every latent stage fit the given GPUs under its accelerate config? (`trl-latent plan`
# builds the model on the meta device; it prints what to try, e.g. ZeRO-3, offload, more GPUs or LoRA, when not.)
if [ -n "${NUM_GPUS:-}" ] && [ -n "${GPU_MEMORY:-}" ]; then
  base=$(config_value "$RECIPE/1_inverse_warmup.yaml" base_model)
  for check in "1 $ACCELERATE_PRETRAIN" "2 $ACCELERATE_PRETRAIN" "3 $ACCELERATE_PRETRAIN" "4 $ACCELERATE_PRETRAIN" \
               "5 $ACCELERATE_WORLD_SFT" "grpo $ACCELERATE_RL"; do
    read -r plan_stage plan_zero <<< "$check"
    if [ "$plan_zero" = single_gpu ]; then plan_zero=ddp; fi
    # The plan (its table and what to try) is shown only when the stage does not fit, on stderr.
    plan_out=$("$PYTHON" -m trl_latent.cli plan "$base" --stage "$plan_stage" --zero "$plan_zero" \
        --num-gpus "$NUM_GPUS" --gpu-memory "$GPU_MEMORY" 2>&1) || {
      echo "$plan_out" >&2
      echo "run.sh: stage $plan_stage of $MODEL does not fit $NUM_GPUS GPU(s) of $GPU_MEMORY GiB under $plan_zero" \
        "(see above); change ACCELERATE_* or the GPUs, or run 'trl-latent plan $base --stage $plan_stage'." >&2
      exit 1
    }
  done
fi

# stage ACCELERATE_CONFIG COMMAND YAML EXTRA_ARGS: run one trl-latent command unless its output is already saved.
stage() {
  local config=$1 command=$2 yaml=$3
  shift 3
  local output
  output=$(config_value "$yaml" output_dir)
  if [ -f "$output/config.json" ]; then
    echo "== $yaml: skipped, $output already holds a saved model"
    return
  fi
  # An interrupted stage (Ctrl-C, a preemption's SIGTERM, a crash after a save) resumes from its newest complete
  # checkpoint instead of starting again from step 0.
  if compgen -G "$output/checkpoint-*" > /dev/null; then
    echo "== $yaml: resuming from the newest complete checkpoint in $output"
    set -- "$@" --resume_from_checkpoint true
  else
    echo "== $yaml"
  fi
  if [ "$LAUNCHER" = python ]; then
    "$PYTHON" -m trl_latent.cli "$command" --config "$yaml" "$@"
  else
    accelerate launch --config_file "$CONFIGS/$config.yaml" -m trl_latent.cli "$command" --config "$yaml" "$@"
  fi
}

# shellcheck disable=SC2086  # the *_ARGS variables hold several arguments
{
  for name in 1_inverse_warmup 2_projector_warmup 3_joint 4_policy_bc; do
    stage "$ACCELERATE_PRETRAIN" sft "$RECIPE/$name.yaml" ${SFT_ARGS:-}
  done
  stage "$ACCELERATE_WORLD_SFT" sft "$RECIPE/$TASK/5_world_sft.yaml" ${SFT_ARGS:-}
  stage "$ACCELERATE_RL" grpo "$RECIPE/$TASK/6_grpo.yaml" ${GRPO_ARGS:-}
  stage "$ACCELERATE_TOKEN_SFT" sft "$RECIPE/$TASK/token_sft.yaml" ${SFT_ARGS:-}
  stage "$ACCELERATE_TOKEN_RL" grpo "$RECIPE/$TASK/token_grpo.yaml" ${GRPO_ARGS:-}
  echo "== $RECIPE/$TASK/eval.yaml"
  "$PYTHON" -m trl_latent.cli eval --config "$RECIPE/$TASK/eval.yaml" ${EVAL_ARGS:-}
}
