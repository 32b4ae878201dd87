"""What a card shows that the run does not record, and where `rlhf push` sends it.

`HubConfig` is the recipe's ``hub`` section (`hub_config_of` reads it from a
run's recipe.yaml); `CardOptions` is the part of it a card needs (repo ids,
license, language, examples), stored in the card folder's `card.json` so that
`rlhf reproduce` renders the same card again (`load_options`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2_rlhf.train.config import check

from .sources import CardError, read_json, read_yaml

CARD_META = "card.json"


def valid_repo_id(repo_id: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}", repo_id)) and ".." not in repo_id


@dataclass
class HubConfig:
    """Publishing (section ``hub``): where `rlhf push` sends a run and what the cards say."""

    repo_id: str | None = field(default=None, metadata={
        "help": "Hub repo for the run's policy (PPO, else DPO, else RLOO: the one the card is about), e.g. "
                "user/gpt2-rlhf (`rlhf push --repo-id` overrides)."})
    sft_repo_id: str | None = field(default=None, metadata={
        "help": "Also push the SFT model here (`--sft-repo-id` overrides)."})
    reward_repo_id: str | None = field(default=None, metadata={
        "help": "Also push the reward model here (`--reward-repo-id` overrides)."})
    base_repo_id: str | None = field(default=None, metadata={
        "help": "Also push the base model here; needed for `rlhf reproduce REPO` when the base was built locally."})
    space_id: str | None = field(default=None, metadata={
        "help": "Also push space/ as a Gradio Space with this id (`--space` overrides)."})
    samples_repo_id: str | None = field(default=None, metadata={
        "help": "Hub dataset repo for the evaluation's samples and report, linked from the cards (default: "
                "`<repo_id>-eval-samples`; `--samples-repo-id` overrides, `--no-samples` pushes none)."})
    private: bool = field(default=False, metadata={"help": "Create new repos as private (`--private`)."})
    license: str = field(default="mit", metadata={"help": "License in the cards' metadata (a Hub license id)."})
    language: list[str] = field(default_factory=lambda: ["en"], metadata={
        "help": "Languages in the cards' metadata (ISO 639-1 codes)."})
    card_examples: int = field(default=3, metadata={
        "help": "Before/after examples on the card: the first N evaluation prompts, in order."})
    commit_message: str = field(default="Upload gpt2-rlhf run", metadata={"help": "Commit message of every push."})
    max_retries: int = field(default=4, metadata={
        "help": "Retries of a Hub call after a transient error (connection, 408, 429, 5xx)."})
    retry_backoff_s: float = field(default=2.0, metadata={
        "help": "Seconds before the first retry; doubled after each."})

    def __post_init__(self):
        for name in ("repo_id", "sft_repo_id", "reward_repo_id", "base_repo_id", "space_id", "samples_repo_id"):
            value = getattr(self, name)
            check(value is None or valid_repo_id(value), f"{name}: {value!r} is not a Hub repo id (namespace/name)")
        check(bool(self.license.strip()), "license: must not be empty")
        check(self.card_examples >= 0, f"card_examples: must be >= 0, got {self.card_examples}")
        check(self.max_retries >= 0, f"max_retries: must be >= 0, got {self.max_retries}")
        check(self.retry_backoff_s >= 0, f"retry_backoff_s: must be >= 0, got {self.retry_backoff_s}")
        check(bool(self.commit_message.strip()), "commit_message: must not be empty")


def hub_config_of(run_dir: Path) -> HubConfig:
    """The `hub` section of the run's recipe.yaml (defaults when absent)."""
    from gpt2_rlhf.train.config import build

    raw = read_yaml(run_dir / "recipe.yaml") or {}
    section = raw.get("hub") or {}
    return build(HubConfig, section, f"{run_dir / 'recipe.yaml'}: hub") if isinstance(section, dict) else HubConfig()


@dataclass
class CardOptions:
    """What a card shows that the run does not record: where the models live, license, language."""

    repo_id: str | None = None
    sft_repo_id: str | None = None
    reward_repo_id: str | None = None
    base_repo_id: str | None = None
    samples_repo_id: str | None = None  # the Hub dataset of the evaluation's samples and report
    # The run's other evaluated policies (dpo/rloo besides the card's own) -> their Hub repos, so that
    # `rlhf reproduce REPO` can download every model the report scores.
    policy_repo_ids: dict[str, str] = field(default_factory=dict)
    license: str = "mit"
    language: list[str] = field(default_factory=lambda: ["en"])
    examples: int = 3

    @classmethod
    def from_hub_config(cls, hub: Any, **overrides: Any) -> "CardOptions":
        opts = cls(repo_id=hub.repo_id, sft_repo_id=hub.sft_repo_id, reward_repo_id=hub.reward_repo_id,
                   base_repo_id=hub.base_repo_id, samples_repo_id=hub.samples_repo_id, license=hub.license, language=list(hub.language),
                   examples=hub.card_examples)
        return dataclasses.replace(opts, **{k: v for k, v in overrides.items() if v is not None})


def load_options(folder: Path) -> CardOptions:
    """The options a card folder was rendered with (its `card.json`)."""
    meta = read_json(folder / CARD_META, "card metadata")
    try:
        return CardOptions(**meta["options"])
    except (KeyError, TypeError) as e:
        raise CardError(f"{folder / CARD_META}: not a card metadata file ({e})") from e
