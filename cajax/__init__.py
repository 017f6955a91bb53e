"""cajax: credit assignment for reinforcement learning of language models.

Pure JAX functions over padded `[B, T]` trajectory batches: masked
statistics, returns, outcome / value / process advantages and policy losses.
Estimators are selectable by name through `cajax.estimate`.
"""

from cajax import agentic
from cajax import groups
from cajax import judges
from cajax import losses
from cajax import masking
from cajax import matching
from cajax import multistep
from cajax import off_policy
from cajax import outcome
from cajax import process
from cajax import registry
from cajax import returns
from cajax import scoring
from cajax import sequences
from cajax import shaping
from cajax import text_rewards
from cajax import token_baseline
from cajax import token_rewards
from cajax.agentic import istar
from cajax.agentic import istar_prm_dpo_loss
from cajax.agentic import istar_step_rewards
from cajax.agentic import matchtir
from cajax.agentic import r3l
from cajax.agentic import slate
from cajax.agentic import turn_rewards
from cajax.groups import batch_moments
from cajax.groups import check_group_ids
from cajax.groups import group_max
from cajax.groups import group_moments
from cajax.groups import group_normalize
from cajax.groups import group_sum
from cajax.groups import GroupMoments
from cajax.masking import broadcast_to_tokens
from cajax.masking import last_token_mask
from cajax.masking import last_valid_index
from cajax.masking import masked_count
from cajax.masking import masked_mean
from cajax.masking import masked_min_max
from cajax.masking import masked_softmax
from cajax.masking import masked_sum
from cajax.masking import masked_var
from cajax.masking import masked_whiten
from cajax.masking import prefix_mask
from cajax.masking import sequence_lengths
from cajax.outcome import drgrpo
from cajax.outcome import gdpo
from cajax.outcome import gpg
from cajax.outcome import grpo
from cajax.outcome import grpo_passk
from cajax.outcome import opo
from cajax.outcome import reinforce_plus_plus_baseline
from cajax.outcome import rloo
from cajax.process import process_grpo
from cajax.process import pure
from cajax.process import sum_form_prm
from cajax.process import tp_grpo
from cajax.registry import estimate
from cajax.registry import Registry
from cajax.registry import estimator_names
from cajax.registry import example_inputs
from cajax.registry import register
from cajax.registry import required_fields
from cajax.registry import resolve
from cajax.multistep import discounted_returns
from cajax.multistep import lambda_returns
from cajax.multistep import n_step_bootstrapped_returns
from cajax.multistep import truncated_generalized_advantage_estimation
from cajax.off_policy import vtrace
from cajax.off_policy import vtrace_td_error_and_advantage
from cajax.off_policy import VTraceOutput
from cajax.returns import gae
from cajax.returns import kl_in_reward
from cajax.returns import prime
from cajax.returns import reinforce_plus_plus
from cajax.returns import remax
from cajax.scoring import sequence_scores
from cajax.sequences import contiguous_runs
from cajax.sequences import masked_cumsum
from cajax.sequences import prefix_count
from cajax.sequences import reverse_discounted_cumsum
from cajax.sequences import step_end_mask
from cajax.sequences import step_prefix_mask
from cajax.sequences import step_token_counts
from cajax.sequences import steps_to_tokens
from cajax.sequences import suffix_min
from cajax.sequences import tokens_to_steps
from cajax.shaping import capo
from cajax.shaping import ucas
from cajax.token_baseline import optimal_token_baseline
from cajax.token_rewards import implicit_sequence_reward
from cajax.token_rewards import implicit_token_reward
from cajax.token_rewards import log_sigmoid_transform
from cajax.types import EstimatorOutput
from cajax.types import Rollouts
from cajax.validation import checkify_estimate
from cajax.validation import validate

__all__ = [
    "EstimatorOutput", "GroupMoments", "Registry", "Rollouts", "VTraceOutput",
    "agentic", "batch_moments", "broadcast_to_tokens", "capo",
    "check_group_ids", "checkify_estimate", "contiguous_runs",
    "discounted_returns", "drgrpo", "estimate", "estimator_names",
    "example_inputs", "gae", "gdpo", "gpg", "group_max", "group_moments",
    "group_normalize", "group_sum", "groups", "grpo", "grpo_passk",
    "implicit_sequence_reward", "implicit_token_reward", "istar",
    "istar_prm_dpo_loss", "istar_step_rewards", "judges", "kl_in_reward",
    "lambda_returns", "last_token_mask", "last_valid_index",
    "log_sigmoid_transform", "losses", "masked_count", "masked_cumsum",
    "masked_mean", "masked_min_max", "masked_softmax", "masked_sum",
    "masked_var", "masked_whiten", "masking", "matching", "matchtir",
    "multistep", "n_step_bootstrapped_returns", "off_policy", "opo",
    "optimal_token_baseline", "outcome", "prefix_count", "prefix_mask", "prime",
    "process", "process_grpo", "pure", "r3l", "register", "registry",
    "reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax",
    "required_fields", "resolve", "returns", "reverse_discounted_cumsum",
    "rloo", "scoring", "sequence_lengths", "sequence_scores", "sequences",
    "shaping", "slate", "step_end_mask", "step_prefix_mask",
    "step_token_counts", "steps_to_tokens", "suffix_min", "sum_form_prm",
    "text_rewards", "token_baseline", "token_rewards", "tokens_to_steps",
    "tp_grpo", "truncated_generalized_advantage_estimation", "turn_rewards",
    "ucas", "validate", "vtrace", "vtrace_td_error_and_advantage",
]

__version__ = "0.1.0"
