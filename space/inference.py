"""Model loading and inference for the Space: no gradio here, and no `train`/`evaluation`.

The Space folder is uploaded alone to the Hub, where the gpt2-rlhf package is not
installed, so the few lines it needs from ``train/modeling.py`` are restated here
(and tests/test_space_inference.py checks they agree with it):

* generation: a KV-cached loop over one prompt at a time, streamed token by token;
* sampling: temperature, then nucleus (top-p) filtering with the same maths as
  ``transformers.TopPLogitsWarper``, then ``torch.multinomial``;
* reward: the scalar head read at the last real token of
  ``prompt + response + EOS`` (the project's convention), normalised with
  ``reward_stats.json``: (raw - mean) / std.

Deviations from ``gpt2_rlhf.train.sampling.generate`` (on purpose, see the notes in each function):

1. The folder ships to the Hub alone, so it keeps its own copy of the project's sampler,
   stepping the decoding loop itself so that each request draws from its **own**
   ``torch.Generator`` (concurrent requests in a web server must not share the global
   RNG, or "same seed, same pair" would not hold). A single-prompt sample is
   token-for-token the one ``gpt2_rlhf.train.sampling.generate`` draws for the same
   seed (tested), and streams as it goes.
2. One prompt per call, so there is no padding in generation; the reward model
   scores both sides in one right-padded batch and pools at the last real token.
3. Prompts longer than the context are cut from the left (the recent turns matter
   most), keeping room for ``max_new_tokens``.
4. In a dialogue, a response ends at the next turn marker ("\\n\\nHuman:" or
   "\\n\\nAssistant:") as well as at EOS: a model that writes the user's next turn
   itself (the base model does, having seen whole HH dialogues) has finished its own,
   and scoring the invented turns would score text the user never asked for. The
   evaluation samples to EOS, so a Space response can be shorter than an evaluation
   sample of the same seed; up to the marker the tokens are the same.
5. The two sides of a comparison sample at the same time, each in its own thread with
   its own generator (`Engine.compare`): the page shows both growing together, and on
   a machine with two free cores both finish in about the time of one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

logger = logging.getLogger(__name__)

REWARD_STATS = "reward_stats.json"
HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"

# Space variables (Settings -> Variables on the Hub); `rlhf push --space` sets them.
ENV_BASE = "RLHF_BASE_ID"
ENV_SFT = "RLHF_SFT_ID"
ENV_POLICY = "RLHF_POLICY_ID"
ENV_REWARD = "RLHF_REWARD_ID"
ENV_DPO = "RLHF_DPO_ID"  # optional: the run's DPO policy (`rlhf dpo`)
ENV_RLOO = "RLHF_RLOO_ID"  # optional: the run's RLOO policy (`rlhf rloo`)
ENV_REVISION = "RLHF_REVISION"  # optional: the branch `rlhf push --revision` pushed the models to
ENV_VOTES_DATASET = "RLHF_VOTES_DATASET"
# "plain": the models continue the prompt as it is (a run trained on prompt-only text); "dialogue" (default):
# the prompt becomes a Human turn and the models answer as the Assistant.
ENV_PROMPT_FORMAT = "RLHF_PROMPT_FORMAT"
PROMPT_FORMATS = ("dialogue", "plain")
# RLHF_REWARD_ID=none: a run trained with a reward function instead of a reward model; nothing scores.
NO_REWARD = "none"
# The models a Space can show, in the order the page lists them: role -> (run directory stage, Space variable).
# "rlhf" is the PPO policy (the role name predates DPO and RLOO; vote records keep it).
ROLES = {"base": ("base", ENV_BASE), "sft": ("sft", ENV_SFT), "rlhf": ("ppo", ENV_POLICY),
         "dpo": ("dpo", ENV_DPO), "rloo": ("rloo", ENV_RLOO)}
# Where a response ends in a dialogue besides EOS: the next turn (deviation 4 above).
TURN_MARKERS = (HH_HUMAN, HH_ASSISTANT)


class InputError(ValueError):
    """Something the person using the Space can fix; the message is shown to them as is."""


# ----------------------------------------------------------------------------- settings


@dataclass
class Limits:
    """What one request may ask for; protects a shared CPU Space from a single user."""

    max_prompt_chars: int = field(default=4000, metadata={"help": "Longest prompt accepted, in characters."})
    max_new_tokens: int = field(default=256, metadata={"help": "Cap on max new tokens per response."})

    def __post_init__(self):
        if self.max_prompt_chars < 1 or self.max_new_tokens < 1:
            raise ValueError(f"limits must be positive, got {self}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Limits":
        env = os.environ if environ is None else environ
        return cls(
            max_prompt_chars=env_int(env, "RLHF_MAX_PROMPT_CHARS", cls.max_prompt_chars),
            max_new_tokens=env_int(env, "RLHF_MAX_NEW_TOKENS", cls.max_new_tokens),
        )


@dataclass
class Decoding:
    """Decoding settings shared by both sides of a comparison, so that it is fair."""

    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens per response (capped by Limits)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 means greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass in (0, 1]; 1 is off."})
    seed: int = field(default=0, metadata={"help": "Seed of each side's sampler: same seed, same pair."})

    def checked(self, limits: Limits) -> "Decoding":
        """A validated copy: bad values raise InputError, max_new_tokens is capped at the limit."""
        try:
            n = float(self.max_new_tokens)
            t = float(self.temperature)
            p = float(self.top_p)
            s = float(self.seed)
        except (TypeError, ValueError):
            raise InputError(f"decoding settings must be numbers, got {asdict(self)}") from None
        if not all(math.isfinite(x) for x in (n, t, p, s)):
            raise InputError("decoding settings must be finite numbers")
        if n < 1:
            raise InputError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 <= t <= 5.0:
            raise InputError(f"temperature must be between 0 and 5, got {self.temperature}")
        if not 0.0 < p <= 1.0:
            raise InputError(f"top-p must be in (0, 1], got {self.top_p}")
        if not (0 <= s < 2**63) or s != int(s):
            raise InputError(f"seed must be a whole number >= 0, got {self.seed}")
        return Decoding(min(int(n), limits.max_new_tokens), t, p, int(s))


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


# ----------------------------------------------------------------------------- prompts

# C0 and C1 control characters except tab and newline: invisible, and some (NUL, ESC)
# upset terminals, log viewers and JSON consumers downstream of the vote file.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_prompt(text: str | None, limits: Limits) -> str:
    """The user's text made safe to tokenise and store; raises InputError with a friendly message.

    HTML stays as text: the page renders prompts and responses in text boxes, so
    `<script>` is shown, never run. Lone surrogates (possible in JSON from a client)
    become U+FFFD so the text is valid UTF-8.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError("the prompt must be text")
    if len(text) > limits.max_prompt_chars:
        raise InputError(
            f"Your prompt is {len(text):,} characters long; this Space accepts at most "
            f"{limits.max_prompt_chars:,}. Please shorten it."
        )
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if not text.strip():
        raise InputError("Please type a prompt first (for example, a question for the assistant).")
    return text


def format_prompt(text: str, prompt_format: str = "dialogue") -> str:
    """A user's message as an HH dialogue ending with the assistant's turn, or (`plain`) the text to continue.

    The models were trained on Anthropic HH text ("\\n\\nHuman: ...\\n\\nAssistant: ...");
    a prompt already written as a dialogue is kept, with "\\n\\nAssistant:" appended
    when it does not end with it. A run trained on plain text prompts continues them as
    they are (trailing whitespace dropped: the next word brings its own space).
    """
    text = text.rstrip()
    if prompt_format == "plain":
        return text
    if text.lstrip().startswith("Human:"):
        text = "\n\n" + text.lstrip()
    if HH_HUMAN in text:
        return text if text.endswith(HH_ASSISTANT) else text + HH_ASSISTANT
    return f"{HH_HUMAN} {text.strip()}{HH_ASSISTANT}"


# ----------------------------------------------------------------------------- sampling maths


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) logits -> (B, V) with tokens outside the nucleus set to -inf.

    Keeps the smallest set of most likely tokens whose probability mass reaches
    `top_p` (Holtzman et al. 2020), computed as transformers' TopPLogitsWarper does
    (ascending sort, drop tokens whose cumulative mass is <= 1 - top_p, always keep
    the most likely one) so that seeded samples match `model.generate`.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)  # (B, V) ascending
    cum = sorted_logits.softmax(-1).cumsum(-1)  # (B, V)
    remove_sorted = cum <= (1.0 - top_p)
    remove_sorted[..., -1] = False  # the most likely token always stays
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) last-position logits -> (B,) next token ids: greedy at temperature 0, else sampled."""
    logits = logits.float()
    if temperature <= 0.0:
        return logits.argmax(-1)
    logits = top_p_filter(logits / temperature, top_p)  # temperature first, as transformers orders them
    probs = logits.softmax(-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) column of the last real token of each row, for any padding side."""
    T = attention_mask.shape[-1]
    cols = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), cols, torch.full_like(cols, -1)).max(-1).values.clamp(min=0)


def cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """`text` up to the earliest of the `stop` strings it contains, or None when it contains none."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(hits)] if hits else None


def hold_back(text: str, stop: Sequence[str]) -> str:
    """`text` without a tail that could be the start of one of `stop` ("...\\n\\nHu" might become "\\n\\nHuman:")."""
    keep = len(text)
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = min(keep, len(text) - k)
                break
    return text[:keep]


def continue_dialogue(context: str, response: str, text: str) -> str:
    """The next turn of an HH dialogue: `context + response`, then the user's `text` as a Human turn.

    `context` ends with "\\n\\nAssistant:" (format_prompt); the result does too, so each side
    answers its own dialogue so far, as the two sides of a multi-turn arena battle do."""
    return f"{context}{response.rstrip()}{HH_HUMAN} {text.strip()}{HH_ASSISTANT}"


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (B, T) ids right-padded with pad_id, (B, T) attention mask."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


# ----------------------------------------------------------------------------- models


def _context_length(config) -> int:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1024


def _load_error(what: str, name: str, err: Exception) -> Exception:
    if Path(name).exists():
        return OSError(f"could not load {what} from {name}: {err}")
    return OSError(f"could not load {what} {name!r}: not a local folder and not fetchable from the Hub ({type(err).__name__})")


def load_tokenizer(name_or_path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        # trust_remote_code explicitly off: left out, transformers asks on stdin for a folder with custom code
        return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", str(name_or_path), e) from e


class Policy:
    """One causal LM of the comparison (base, SFT or RLHF) with its tokenizer."""

    def __init__(self, role: str, model_id: str, model, tokenizer):
        self.role = role
        self.model_id = model_id
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = _context_length(model.config)
        self._tok_lock = threading.Lock()  # fast tokenizers are not safe to call from many threads at once

    @classmethod
    def load(cls, role: str, name_or_path: str, device: str = "cpu", revision: str | None = None) -> "Policy":
        from transformers import AutoModelForCausalLM

        tok = load_tokenizer(name_or_path, revision)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), use_safetensors=True, trust_remote_code=False,
                                                         dtype=torch.float32, revision=revision)
        except (OSError, ValueError) as e:
            raise _load_error(f"{role} model", str(name_or_path), e) from e
        return cls(role, str(name_or_path), model.to(device), tok)

    def encode(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @torch.no_grad()
    def stream(self, prompt: str, decoding: Decoding, stop: Sequence[str] = ()) -> Iterator[str]:
        """Yields the response decoded so far after each new token; the last yield is the full response.

        Steps:
        1. tokenise the prompt; keep its last (context - max_new_tokens) tokens;
        2. one forward over the prompt fills the KV cache;
        3. repeat: pick the next token from the last logits (own seeded generator),
           feed only that token with the cache, stop after EOS or max_new_tokens, or
           once the text holds one of `stop` (the response is cut before it);
        4. decode without special tokens (EOS is not part of the text).
        """
        device = next(self.model.parameters()).device
        max_new = max(1, min(decoding.max_new_tokens, self.context - 1))
        ids = self.encode(prompt)[-(self.context - max_new):]  # step 1
        if not ids:
            ids = [self.tokenizer.eos_token_id]
        generator = None
        if decoding.temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(decoding.seed)
        eos = self.tokenizer.eos_token_id
        inputs = torch.tensor([ids], device=device)  # (1, P)
        past = None
        out_ids: list[int] = []
        for _ in range(max_new):
            out = self.model(input_ids=inputs, past_key_values=past, use_cache=True)  # steps 2-3
            past = out.past_key_values
            tok = next_token(out.logits[:, -1, :], decoding.temperature, decoding.top_p, generator)  # (1,)
            out_ids.append(int(tok))
            if int(tok) == eos:
                break
            inputs = tok.view(1, 1)
            text = self.decode(out_ids)
            cut = cut_at_stop(text, stop)
            if cut is not None:  # step 3: the model began the next turn
                yield cut
                return
            # A byte-level BPE token may end inside a multi-byte character; hold the
            # replacement character back until the character is complete, and the start
            # of a possible turn marker until it is known not to be one.
            yield hold_back(text, stop).rstrip("\ufffd")
        yield self.decode(out_ids)  # step 4


class RewardScorer:
    """The reward model (scalar head) and its normalisation statistics."""

    def __init__(self, model_id: str, model, tokenizer, mean: float = 0.0, std: float = 1.0, stats_source: str = "none"):
        self.model_id = model_id
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean = float(mean)
        self.std = float(std)
        self.stats_source = stats_source
        self.context = _context_length(model.config)
        self._tok_lock = threading.Lock()

    @property
    def normalised(self) -> bool:
        return self.stats_source != "none"

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", revision: str | None = None) -> "RewardScorer":
        from transformers import AutoModelForSequenceClassification

        tok = load_tokenizer(name_or_path, revision)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(name_or_path), num_labels=1, use_safetensors=True, trust_remote_code=False, dtype=torch.float32,
                revision=revision
            )
        except (OSError, ValueError) as e:
            raise _load_error("reward model", str(name_or_path), e) from e
        mean, std, source = read_reward_stats(str(name_or_path), revision)
        return cls(str(name_or_path), model.to(device), tok, mean, std, source)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / max(self.std, 1e-8)

    @torch.no_grad()
    def score(self, prompt: str, responses: Sequence[str]) -> tuple[list[float], list[float]]:
        """Raw and normalised scores of `prompt + response + EOS` for each response, in one batch.

        Decoded responses never contain EOS (it is a special token), so EOS is always
        appended: a response that ended with EOS is scored exactly as sampled.
        Sequences longer than the context keep their last tokens.
        """
        eos = self.tokenizer.eos_token_id
        with self._tok_lock:
            rows = [list(self.tokenizer(prompt + r, add_special_tokens=False)["input_ids"]) + [eos] for r in responses]
        rows = [r[-self.context:] for r in rows]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        ids, mask = pad_right(rows, pad)  # (B, T), (B, T)
        device = next(self.model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # GPT-2 does not derive positions from the mask
        hidden = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        values = self.model.score(hidden).squeeze(-1).float()  # (B, T)
        raw = values[torch.arange(values.shape[0], device=device), last_token_index(mask)].cpu()  # (B,)
        return raw.tolist(), self.normalise(raw).tolist()


def read_reward_stats(name_or_path: str, revision: str | None = None) -> tuple[float, float, str]:
    """(mean, std, source) from reward_stats.json in a local folder or a Hub repo; (0, 1, 'none') if absent."""
    path = Path(name_or_path) / REWARD_STATS
    if not path.exists() and not Path(name_or_path).exists():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name_or_path, REWARD_STATS, revision=revision))
        except Exception as e:  # noqa: BLE001 - any Hub failure means: no statistics
            logger.warning("no %s for %s (%s); showing raw scores", REWARD_STATS, name_or_path, type(e).__name__)
            return 0.0, 1.0, "none"
    if not path.exists():
        logger.warning("no %s in %s; showing raw scores", REWARD_STATS, name_or_path)
        return 0.0, 1.0, "none"
    try:
        d = json.loads(path.read_text())
        mean, std = float(d["mean"]), float(d["std"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid reward_stats.json ({type(e).__name__}: {e})") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"{path}: mean must be finite and std positive, got mean={mean} std={std}")
    return mean, std, str(d.get("source", str(path)))


# ----------------------------------------------------------------------------- engine


@dataclass
class ModelSources:
    """Where each model comes from: local folders or Hub model ids. Any two policies make a Space."""

    policy: str | None  # the PPO policy (role "rlhf")
    reward: str | None  # None: trained with a reward function, no reward model to score with
    base: str | None = None
    sft: str | None = None
    revision: str | None = None  # Hub branch of the pushed models; the base falls back to the default branch
    prompt_format: str = "dialogue"  # PROMPT_FORMATS
    dpo: str | None = None
    rloo: str | None = None

    def __post_init__(self):
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"{ENV_PROMPT_FORMAT}: must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")

    def policies(self) -> dict[str, str]:
        """role -> source of every policy given, in ROLES order."""
        by_role = {"base": self.base, "sft": self.sft, "rlhf": self.policy, "dpo": self.dpo, "rloo": self.rloo}
        return {role: src for role, src in by_role.items() if src}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ModelSources":
        """From the Space variables RLHF_POLICY_ID, RLHF_BASE_ID, RLHF_SFT_ID, RLHF_DPO_ID, RLHF_RLOO_ID (at least
        two of them), RLHF_REWARD_ID (a model id, or `none` for a run trained with a reward function),
        RLHF_REVISION and RLHF_PROMPT_FORMAT (optional)."""
        env = os.environ if environ is None else environ
        get = lambda k: (env.get(k) or "").strip() or None  # noqa: E731
        model_vars = [var for _, var in ROLES.values()]
        given = [var for var in model_vars if get(var)]
        problems = [f"{ENV_REWARD} (a reward model id, or `none`)"] if not get(ENV_REWARD) else []
        if len(given) < 2:
            problems.append(f"at least two of {', '.join(model_vars)} (have: {', '.join(given) or 'none'})")
        if problems:
            raise ValueError(f"set the Space variables {' and '.join(problems)} to model ids (Settings -> Variables)")
        reward = get(ENV_REWARD)
        return cls(policy=get(ENV_POLICY), reward=None if reward.lower() == NO_REWARD else reward, base=get(ENV_BASE),
                   sft=get(ENV_SFT), revision=get(ENV_REVISION), prompt_format=get(ENV_PROMPT_FORMAT) or "dialogue",
                   dpo=get(ENV_DPO), rloo=get(ENV_RLOO))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "ModelSources":
        """base/, sft/, ppo/, dpo/, rloo/ (each when finished) and reward/ of a run directory (docs/DESIGN.md).

        A PPO stage trained with a reward function or classifier (ppo/metrics.json `reward.kind`) needs no
        reward/; one trained on plain text prompts (`prompts.template`) makes the Space continue prompts."""
        run = Path(run_dir)
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run directory")

        def finished(stage: str) -> str | None:
            d = run / stage
            return str(d) if (d / "COMPLETE").is_file() else None

        trained = next((s for s in ("ppo", "rloo", "dpo") if finished(s)), None)
        if trained is None:
            raise FileNotFoundError(f"{run / 'ppo'}: missing or unfinished (no COMPLETE marker), and no finished "
                                    "dpo/ or rloo/ either; run `rlhf run` first")
        metrics = _json_object(run / trained / "metrics.json")
        without_rm = (metrics.get("reward") or {}).get("kind") in ("function", "classifier") or trained == "dpo"
        found = {stage: finished(stage) for stage, _ in ROLES.values()}
        if sum(1 for v in found.values() if v) < 2:
            raise FileNotFoundError(f"{run}: the Space compares two models, and only {trained}/ is finished "
                                    "(base/, sft/, ppo/, dpo/, rloo/ have no COMPLETE marker)")
        reward = finished("reward")
        if not reward and not without_rm:
            raise FileNotFoundError(f"{run / 'reward'}: missing or unfinished (no COMPLETE marker); run `rlhf run` first")
        plain = (metrics.get("prompts") or {}).get("template") == "plain"
        return cls(policy=found["ppo"], reward=reward, base=found["base"], sft=found["sft"],
                   prompt_format="plain" if plain else "dialogue", dpo=found["dpo"], rloo=found["rloo"])


def _json_object(path: Path) -> dict:
    """A JSON object file's content, {} when absent or unreadable (then the run is read as an HH run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Side:
    """One side of a comparison, as far as it has streamed."""

    role: str
    model_id: str
    response: str
    reward: float | None = None  # raw score
    reward_normalised: float | None = None
    prompt: str = ""  # what this side answered (its own dialogue so far, ending with the Assistant turn)
    tokens: int | None = None  # response length in tokens, once finished
    finished: bool = False


@dataclass
class Update:
    """What the page shows while a comparison streams; `done` on the last one (with scores)."""

    left: Side
    right: Side
    done: bool = False


class Engine:
    """Every model of the Space: the policies by role (ROLES: "base", "sft", "rlhf", "dpo", "rloo") and the
    reward model."""

    def __init__(self, policies: Mapping[str, Policy], reward: RewardScorer | None, limits: Limits | None = None,
                 prompt_format: str = "dialogue"):
        if len(policies) < 2:
            raise ValueError(f"the Space compares two models; got {len(policies)} ({', '.join(policies) or 'none'})")
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format: must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
        self.policies = dict(policies)
        self.reward = reward  # None: no reward model (the run was trained with a reward function)
        self.limits = limits or Limits()
        self.prompt_format = prompt_format

    @classmethod
    def load(cls, sources: ModelSources, limits: Limits | None = None, device: str | None = None) -> "Engine":
        # On ZeroGPU, `import spaces` (app.py) makes CUDA look available at start-up; the weights move to the GPU
        # that each @spaces.GPU call is lent.
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        rev = sources.revision
        policies = {}
        for role, src in sources.policies().items():
            logger.info("loading %s model from %s%s", role, src, f"@{rev}" if rev else "")
            try:
                policies[role] = Policy.load(role, src, device, rev)
            except OSError:
                if role != "base" or not rev:
                    raise
                # the base is often an upstream model (gpt2) without the pushed branch
                logger.info("no revision %s for %s; using its default branch", rev, src)
                policies[role] = Policy.load(role, src, device)
        if sources.reward is None:
            logger.info("no reward model: responses are not scored (the run was trained with a reward function)")
            return cls(policies, None, limits, sources.prompt_format)
        logger.info("loading reward model from %s", sources.reward)
        return cls(policies, RewardScorer.load(sources.reward, device, rev), limits, sources.prompt_format)

    @property
    def roles(self) -> list[str]:
        """The models of this Space, in ROLES order (base, sft, rlhf, dpo, rloo)."""
        return [r for r in ROLES if r in self.policies] + [r for r in self.policies if r not in ROLES]

    @property
    def default_pair(self) -> tuple[str, str]:
        """The pair a page starts with: the last trained policy against SFT (else the base, else the first)."""
        roles = self.roles
        first = next((r for r in ("rlhf", "rloo", "dpo") if r in roles), roles[-1])
        second = next((r for r in ("sft", "base") + tuple(roles) if r in roles and r != first))
        return first, second

    @property
    def stop(self) -> tuple[str, ...]:
        """Where a response ends besides EOS: the next turn in a dialogue, nothing in plain text."""
        return TURN_MARKERS if self.prompt_format == "dialogue" else ()

    def prepare(self, text: str | None, decoding: Decoding) -> tuple[str, Decoding]:
        """(prompt in the run's format, checked decoding) or InputError with a message for the user."""
        return format_prompt(clean_prompt(text, self.limits), self.prompt_format), decoding.checked(self.limits)

    def compare(self, prompt: str | Sequence[str], decoding: Decoding, left: str, right: str) -> Iterator[Update]:
        """Streams `left` and `right` at the same time on the same settings, then scores both.

        `prompt` is one formatted prompt for both sides (see `prepare`) or a pair, one per
        side (a follow-up turn: each side continues its own dialogue, `continue_dialogue`).
        Each side gets a fresh generator seeded with `decoding.seed` (common random
        numbers: the comparison differs only by the model) and runs in its own thread, so
        the same seed gives the same pair whatever else the server is doing. Updates come
        as the tokens do; the last one (`done`) has the scores.
        """
        for role in (left, right):
            if role not in self.policies:
                raise InputError(f"no {role!r} model in this Space (have: {', '.join(self.policies)})")
        if left == right:
            raise InputError("Pick two different models to compare.")
        prompts = (prompt, prompt) if isinstance(prompt, str) else tuple(prompt)
        sides = [Side(role, self.policies[role].model_id, "", prompt=p) for role, p in zip((left, right), prompts)]
        events: queue.SimpleQueue = queue.SimpleQueue()
        halt = threading.Event()  # set when the consumer stops listening (page closed) or a side failed

        def run(i: int) -> None:
            try:
                for text in self.policies[sides[i].role].stream(sides[i].prompt, decoding, self.stop):
                    if halt.is_set():
                        return
                    events.put((i, text, None))
                events.put((i, None, None))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                events.put((i, None, e))

        threads = [threading.Thread(target=run, args=(i,), name=f"space-{s.role}", daemon=True)
                   for i, s in enumerate(sides)]
        for t in threads:
            t.start()
        try:
            while not all(s.finished for s in sides):
                batch = [events.get()]
                while True:  # everything that arrived meanwhile makes one update
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                for i, text, err in batch:
                    if err is not None:
                        raise err
                    if text is None:
                        sides[i].finished = True
                        sides[i].tokens = len(self.policies[sides[i].role].encode(sides[i].response))
                    else:
                        sides[i].response = text
                if not all(s.finished for s in sides):
                    yield Update(sides[0], sides[1])
        finally:
            halt.set()
            for t in threads:
                t.join()
        if self.reward is not None:
            if prompts[0] == prompts[1]:
                raw, norm = self.reward.score(prompts[0], [s.response for s in sides])
            else:
                scored = [self.reward.score(s.prompt, [s.response]) for s in sides]
                raw, norm = [r[0][0] for r in scored], [r[1][0] for r in scored]
            for side, r, n in zip(sides, raw, norm):
                side.reward, side.reward_normalised = r, n
        yield Update(sides[0], sides[1], done=True)
