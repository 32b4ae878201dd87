"""Example reward functions for PPO: `ppo.reward_function: train.rewards:<name>`.

A reward function takes the batch's prompts and sampled responses (texts, the
response without the prompt and without EOS) and returns one float per response.
It replaces the reward model in PPO's score step; the KL penalty still applies.
"""

from __future__ import annotations

from collections.abc import Sequence


def contains_good(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """+1 when the response contains the word "good" in any case, else -1: the first seed document's reward.

    The seed called ``PPOTrainer(reward_function=...)``, an API that never existed; its
    keyword reward is kept here as a toy that shows PPO moving a measurable behaviour
    (the share of responses containing "good"), not as a model of helpfulness.

    Deviation: the seed's code is ``"good" in text`` (case-sensitive). On the embedded
    world the SFT policy writes "Good question!"/"Good luck!" (about 19 % of samples)
    but lowercase "good" in well under 1 %, so the literal check almost never fires
    and PPO has nothing to learn from (measured: 1,024 episodes left the share at
    0.8 %). We match the word case-insensitively; `contains_good_exact` is the literal
    check.
    """
    return [1.0 if "good" in r.lower() else -1.0 for r in responses]


def contains_good_exact(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The seed's literal rule: +1 when ``"good" in response`` (case-sensitive), else -1."""
    return [1.0 if "good" in r else -1.0 for r in responses]


def response_length(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Number of words in the response: a sanity check that PPO can move length (a known reward hack)."""
    return [float(len(r.split())) for r in responses]


def gold(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The embedded world's gold judge as the reward: the ceiling a learned reward model is measured against.

    PPO with this reward optimises the truth itself, so its gold gain bounds what any
    reward model (trained on any feedback) can give the same PPO budget. Embedded data only.
    """
    from .synthetic.gold import gold_score

    return [gold_score(p, r) for p, r in zip(prompts, responses)]
