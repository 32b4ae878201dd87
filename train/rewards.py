"""Example reward functions for PPO: `ppo.reward_function: train.rewards:<name>`.

A reward function takes the batch's prompts and sampled responses (texts, the
response without the prompt and without EOS) and returns one float per response.
It replaces the reward model in PPO's score step; the KL penalty still applies.
"""

from __future__ import annotations

from collections.abc import Sequence


def contains_good(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """+1 when the response contains "good", else -1: the reward of the first seed document.

    The seed called ``PPOTrainer(reward_function=...)``, an API that never existed;
    its keyword reward is kept here, as a toy that shows PPO moving a measurable
    behaviour (the share of responses containing "good"), not as a model of helpfulness.
    Matching is case-sensitive substring matching, exactly as the seed's ``"good" in text``.
    """
    return [1.0 if "good" in r else -1.0 for r in responses]


def response_length(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Number of words in the response: a sanity check that PPO can move length (a known reward hack)."""
    return [float(len(r.split())) for r in responses]
