"""The models an evaluation compares: base, SFT and every trained policy. The one table of them.

The evaluation, the report's schema and findings, the plots, the card and `rlhf reproduce` read
their model keys, names and pairs from here, so a new policy stage (one writing `OUTPUT/<key>/`
laid out like `OUTPUT/ppo/`: a Hugging Face model directory, config.yaml, metrics.json, COMPLETE)
is one line in `MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    """How a model is named, and whether it was trained against the evaluation's reward."""

    name: str  # inside a sentence (the report's findings)
    label: str  # as a heading (the card's tables)
    # Trained to maximise the reward that scores the evaluation (a reward model or function): only then
    # is "the reward rises and gold does not" reward hacking. DPO never queries a reward, so it is not.
    optimises_reward: bool = False


# In report order: the untrained models, then the trained policies (a new policy stage: one line here).
MODELS: dict[str, Model] = {
    "base": Model("base", "Base"),
    "sft": Model("SFT", "SFT"),
    "ppo": Model("PPO", "PPO (RLHF)", optimises_reward=True),
    "dpo": Model("DPO", "DPO"),
    "rloo": Model("RLOO", "RLOO", optimises_reward=True),
}
UNTRAINED = ("base", "sft")  # the models every policy is compared with
MODEL_KEYS = tuple(MODELS)
POLICY_KEYS = tuple(k for k in MODELS if k not in UNTRAINED)

# How each model is named: NAMES inside a sentence (the report's findings), LABELS as a heading (the card's
# tables). The Space ships alone and keeps its own role names.
NAMES = {k: m.name for k, m in MODELS.items()}
LABELS = {k: m.label for k, m in MODELS.items()}


def policies_of(keys) -> list[str]:
    """The trained policies among `keys`, in report order."""
    return [k for k in POLICY_KEYS if k in keys]


def model_pairs(keys) -> list[tuple[str, str]]:
    """The compared pairs of the models in `keys`, in report order; (a, b) reads "a against b".

    Each policy against SFT and base, then each policy against every later policy (ppo_vs_dpo,
    ppo_vs_rloo, dpo_vs_rloo), then SFT against base. With PPO alone: ppo_vs_sft, ppo_vs_base, sft_vs_base."""
    pols = policies_of(keys)
    out = [(p, u) for p in pols for u in ("sft", "base")]
    out += [(a, b) for i, a in enumerate(pols) for b in pols[i + 1:]]
    out.append(("sft", "base"))
    return [(a, b) for a, b in out if a in keys and b in keys]


ALL_PAIRS = tuple(model_pairs(MODEL_KEYS))
