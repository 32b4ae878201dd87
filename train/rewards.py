"""Rewards without a trained reward model: Python functions and text classifiers.

A reward function takes the batch's prompts and sampled responses (texts, the
response without the prompt and without EOS) and returns one float per response.
It replaces the reward model in PPO's score step (``ppo.reward_function``); the KL
penalty still applies. Two signatures are accepted:

* ours, positional: ``f(prompts, responses) -> list[float]``;
* TRL's ``reward_funcs`` style, by keyword: ``f(prompts, completions, **kwargs) ->
  list[float]`` (any function with a ``completions`` parameter or ``**kwargs``). It is
  called as ``f(prompts=..., completions=...)``: plain-text prompts and completions;
  TRL's other keywords (``completion_ids``, dataset columns, ``trainer_state``) are
  not passed.

A sequence classifier (a local folder or a Hub id, e.g. a sentiment model as in
TRL's classic IMDB example) is a reward too (``ppo.reward_classifier``): the score
of one of its labels (``reward_classifier_label``) on ``prompt + response`` or on
the response alone (``ClassifierReward``).

Example functions: ``contains_good`` (seed 000's keyword reward), its literal
``contains_good_exact``, ``response_length``, ``gold`` (the embedded world's judge).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLASSIFIER_SCORES = ("log_odds", "logit", "probability")
CLASSIFIER_TEXTS = ("full", "response")


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


# ----------------------------------------------------------------------------- signatures


def takes_keywords(fn: Callable) -> bool:
    """TRL's reward-function signature: a ``completions`` parameter, or ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: called positionally
        return False
    return any(p.name == "completions" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


# The package's folders were importable as top-level names before the gpt2_rlhf namespace
# (`train.rewards:contains_good`); recipes written that way keep working.
LEGACY_PACKAGES = ("train", "evaluation", "model_card", "space")


def load_reward_function(spec: str, what: str = "ppo.reward_function") -> Callable[[list[str], list[str]], list[float]]:
    """'module:function' -> the function as ``(prompts, responses) -> list[float]`` (either signature, see the
    module docstring); a one-line error naming `what` when it cannot be imported.

    A module under one of the package's folders may be written without the namespace
    (`train.rewards:contains_good` means `gpt2_rlhf.train.rewards:contains_good`).
    """
    import importlib

    module, _, name = spec.partition(":")
    if module.split(".")[0] in LEGACY_PACKAGES:
        module = "gpt2_rlhf." + module
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {spec!r}: cannot import it ({type(e).__name__}: {e})") from e
    if not callable(fn):
        raise ValueError(f"{what} {spec!r}: not callable")
    return as_reward_function(fn)


def as_reward_function(fn: Callable) -> Callable[[list[str], list[str]], list[float]]:
    """`fn` as ``(prompts, responses) -> list[float]``: itself when it takes them positionally (ours), else
    an adapter that calls it TRL's way, ``fn(prompts=..., completions=...)``."""
    if not takes_keywords(fn):
        return fn

    def reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return fn(prompts=list(prompts), completions=list(responses))

    reward.__name__ = getattr(fn, "__name__", "reward")
    reward.__doc__ = fn.__doc__
    return reward


def checked(fn: Callable, name: str = "") -> Callable[[list[str], list[str]], list[float]]:
    """`fn` whose result is checked: one finite number per response, or a one-line error naming `name`, the
    response's index and its start (TRL lets a reward function return None for "not applicable": here it is
    an error, there is no other reward to fall back on)."""
    name = name or getattr(fn, "__name__", "reward function")

    def reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        prompts, responses = list(prompts), list(responses)
        out = fn(prompts, responses)
        if out is None or isinstance(out, (str, bytes)) or not hasattr(out, "__iter__"):
            raise ValueError(f"reward function {name}: must return a list of numbers, got {type(out).__name__}")
        values = list(out)
        if len(values) != len(responses):
            raise ValueError(f"reward function {name}: returned {len(values)} scores for {len(responses)} responses")
        for i, v in enumerate(values):
            try:
                values[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"reward function {name}: score {i} is {v!r}, not a number (response "
                                 f"{responses[i][:80]!r})") from None
            if not math.isfinite(values[i]):
                raise ValueError(f"reward function {name}: non-finite score for response {i}: {responses[i][:80]!r}")
        return values

    reward.__name__ = getattr(fn, "__name__", "reward")
    return reward


# ----------------------------------------------------------------------------- classifiers


def load_classifier(name: str, what: str = "classifier", trust_remote_code: bool = False):
    """(model, tokenizer) of a sequence classifier, local folder or Hub id (train.modeling.load_text_classifier:
    safetensors only; right padding, a long text keeps its end), in eval mode."""
    from .modeling import load_text_classifier

    return load_text_classifier(name, what, trust_remote_code)


def resolve_label(model, label: str | int | None, what: str, name: str) -> int:
    """The index of `label` (a name, or an index as text) among the classifier's labels; None: the last."""
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    if label is None:
        return max(id2label)
    if str(label) in (model.config.label2id or {}):
        return int(model.config.label2id[str(label)])
    if str(label).isdigit() and int(label) in id2label:
        return int(label)
    raise ValueError(f"{what}: {label!r} is not a label of {name} ({sorted(id2label.values())})")


def classifier_logits(model, tokenizer, texts: Sequence[str], batch_size: int = 32):
    """(N, L) float logits of the classifier on `texts` (an empty text is read as one space)."""
    import torch

    device = next(model.parameters()).device
    max_len = min(getattr(tokenizer, "model_max_length", 512) or 512, 512,
                  getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 512))
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            chunk = [t if t else " " for t in texts[i:i + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_len).to(device)
            out.append(model(**enc).logits.float().cpu())
    return torch.cat(out) if out else torch.zeros((0, model.config.num_labels))


def label_scores(logits, label: int, score: str):
    """(N,) the score of class `label` from (N, L) logits: its logit, its probability (softmax; sigmoid for
    a single-logit model), or its log-odds log p / (1 - p), which is > 0 exactly when p > 1/2."""
    import torch

    if logits.shape[1] == 1:
        z = logits[:, 0]
        return {"logit": z, "log_odds": z, "probability": torch.sigmoid(z)}[score]
    if score == "logit":
        return logits[:, label]
    if score == "probability":
        return torch.softmax(logits, -1)[:, label]
    others = torch.cat([logits[:, :label], logits[:, label + 1:]], 1)
    return logits[:, label] - torch.logsumexp(others, -1)


@dataclass
class ClassifierReward:
    """A sequence classifier's score of one label as the reward: ``(prompts, responses) -> list[float]``.

    `text`: ``full`` reads ``prompt + response`` (TRL's IMDB example scores query + response), ``response``
    the response alone. `score`: ``log_odds`` (default; positive exactly when the classifier picks the label),
    ``logit`` (the raw logit, as in TRL's example) or ``probability``."""

    name: str
    label: str | None = None
    score: str = "log_odds"
    text: str = "full"
    batch_size: int = 32
    device: Any = None

    def __post_init__(self) -> None:
        if self.score not in CLASSIFIER_SCORES:
            raise ValueError(f"reward_classifier_score: must be one of {', '.join(CLASSIFIER_SCORES)}, got {self.score!r}")
        if self.text not in CLASSIFIER_TEXTS:
            raise ValueError(f"reward_classifier_text: must be one of {', '.join(CLASSIFIER_TEXTS)}, got {self.text!r}")
        self.model, self.tokenizer = load_classifier(self.name, "reward classifier")
        if self.device is not None:
            self.model.to(self.device)
        self.label_index = resolve_label(self.model, self.label, "reward_classifier_label", self.name)
        self.label_name = str(self.model.config.id2label.get(self.label_index, self.label_index))
        self.__name__ = f"classifier {self.name} [{self.label_name}]"

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        texts = [p + r for p, r in zip(prompts, responses)] if self.text == "full" else list(responses)
        logits = classifier_logits(self.model, self.tokenizer, texts, self.batch_size)
        return [float(v) for v in label_scores(logits, self.label_index, self.score)]


# ----------------------------------------------------------------------------- a recipe's reward


@dataclass(frozen=True)
class RewardSpec:
    """The reward of a recipe section without a reward model: a function or a classifier (never both).

    Read from a section's ``reward_function``, ``reward_classifier``, ``reward_classifier_label``,
    ``reward_classifier_score`` and ``reward_classifier_text`` (PPOConfig, EvalConfig), or from a mapping
    with those keys (a stage's recorded config.yaml)."""

    function: str | None = None
    classifier: str | None = None
    label: str | None = None
    score: str = "log_odds"
    text: str = "full"

    @classmethod
    def of(cls, section: Any) -> "RewardSpec | None":
        get = section.get if isinstance(section, dict) else (lambda k, d=None: getattr(section, k, d))
        spec = cls(function=get("reward_function"), classifier=get("reward_classifier"),
                   label=None if get("reward_classifier_label") is None else str(get("reward_classifier_label")),
                   score=get("reward_classifier_score") or "log_odds", text=get("reward_classifier_text") or "full")
        return spec if spec.function or spec.classifier else None

    @property
    def kind(self) -> str:
        return "function" if self.function else "classifier"

    @property
    def name(self) -> str:
        return self.function or str(self.classifier)

    def load(self, device: Any = None, batch_size: int = 32) -> Callable[[list[str], list[str]], list[float]]:
        """The reward as ``(prompts, responses) -> list[float]``."""
        if self.function:
            return checked(load_reward_function(self.function), self.function)
        return ClassifierReward(str(self.classifier), self.label, self.score, self.text, batch_size, device)

    def describe(self, loaded: Any = None) -> dict[str, Any]:
        """The evaluation report's `reward` block (docs/report-schema.md)."""
        if self.function:
            return {"kind": "function", "function": self.function}
        out = {"kind": "classifier", "classifier": str(self.classifier), "score": self.score, "text": self.text}
        label = getattr(loaded, "label_name", None) or self.label
        if label is not None:
            out["label"] = str(label)
        return out


def check_reward_fields(section: Any, where: str) -> None:
    """Raises ValueError when a section names both a function and a classifier, or a bad classifier setting."""
    if getattr(section, "reward_function", None) and getattr(section, "reward_classifier", None):
        raise ValueError(f"{where}reward_classifier: set reward_function or reward_classifier, not both")
    fn = getattr(section, "reward_function", None)
    if fn is not None:
        module, sep, attr = fn.partition(":")
        if not (sep and module and attr):
            raise ValueError(f"{where}reward_function must look like 'module:function', got {fn!r}")
    if getattr(section, "reward_classifier_score", "log_odds") not in CLASSIFIER_SCORES:
        raise ValueError(f"{where}reward_classifier_score: must be one of {', '.join(CLASSIFIER_SCORES)}, got "
                         f"{section.reward_classifier_score!r}")
    if getattr(section, "reward_classifier_text", "full") not in CLASSIFIER_TEXTS:
        raise ValueError(f"{where}reward_classifier_text: must be one of {', '.join(CLASSIFIER_TEXTS)}, got "
                         f"{section.reward_classifier_text!r}")
    if getattr(section, "reward_classifier_label", None) is not None and not getattr(section, "reward_classifier", None):
        raise ValueError(f"{where}reward_classifier_label needs reward_classifier (the classifier whose label it names)")
