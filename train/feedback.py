"""`rlhf label`: feedback on the policy's own samples, written as an HH preference dataset.

Real RLHF labels comparisons of the policy's *own* samples (Ziegler et al. 2019,
Stiennon et al. 2020, Ouyang et al. 2022; Bai et al. 2022 iterate it online): a
reward model trained only on a static, off-policy dataset is accurate on that
dataset and blind on what the policy actually writes, and PPO finds its blind
spots. This stage closes the loop.

Steps (``main``):
  1. the policy of this round (SFT in round 1, the previous round's PPO after it);
  2. k responses per prompt for train prompts (until the label budget, a number of
     comparisons, is spent) and for held-out test prompts, with the shared sampler;
  3. a labeller scores every response; every pair of distinct responses of a
     prompt whose scores differ by at least ``min_gap`` becomes one comparison,
     decided by the labeller's noise model (train split only; the test split is
     decided without noise: it measures the reward model against the truth);
  4. ``OUTPUT/label`` (``label_roundN`` for an earlier round): ``train.jsonl`` and
     ``test.jsonl`` in HH format (``chosen``/``rejected`` full dialogue texts, which
     ``rlhf reward --dataset DIR`` reads), ``samples.jsonl`` (every response with its
     labeller score, for rank correlations) and ``provenance.json``.

Labellers (``labeller``):
  * ``gold``: the embedded world's gold judge as a simulated human rater. Noise:
    Bradley-Terry on the score difference with a temperature (P(a > b) =
    sigmoid((g_a - g_b) / T), T = 0: always the higher), then a flip rate.
  * ``reward_model``: any reward model (AI feedback), on normalised scores.
  * ``function``: a Python reward function ``module:function(prompts, responses)``.
  * ``votes``: the Space's blind votes (human feedback), as the HH file that
    ``rlhf votes VOTES --blind-only --out FILE`` writes; no sampling here, the voters
    saw the responses. (train/ does not import the Space's code: the Space stands alone.)

Deviation: InstructGPT asks a rater to rank K responses; the simulated rater here
scores each response and every pair it is not indifferent about (gap >= min_gap)
becomes a comparison, as a ranking of K would give K-choose-2 of them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch

from .config import check
from .sampling import DECODING, GenerationSettings

logger = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
SAMPLES = "samples.jsonl"
LABELLERS = ("gold", "reward_model", "function", "votes")


@dataclass
class LabelConfig:
    """The feedback stage (section ``label``): who labels which samples, and how many comparisons."""

    rounds: int = field(default=2, metadata={"help": (
        "Feedback rounds `rlhf run` makes: label -> reward -> ppo, repeated; round r > 1 labels the previous "
        "round's PPO samples, retrains the reward model on every label so far and continues that PPO policy.")})
    policy: str = field(default="auto", metadata={"help": (
        "Whose samples are labelled: auto (SFT in round 1, the previous round's PPO after), sft, base, ppo, "
        "or a model directory.")})
    labeller: Literal["gold", "reward_model", "function", "votes"] = field(default="gold", metadata={"help": (
        "gold: the embedded world's judge as a simulated rater; reward_model: a reward model (AI feedback); "
        "function: a Python reward function; votes: the Space's blind votes.")})
    labeller_path: str | None = field(default=None, metadata={"help": (
        "reward_model: its directory (default OUTPUT/reward); function: 'module:function'; votes: the HH file "
        "written by `rlhf votes VOTES --blind-only --out FILE`.")})
    comparisons: int = field(default=3000, metadata={"help": "Label budget per round: train comparisons written."})
    test_prompts: int = field(default=100, metadata={"help": (
        "Held-out test prompts whose labelled samples measure the reward model on policy samples (0 = none).")})
    samples_per_prompt: int = field(default=4, metadata={"help": "Responses sampled per prompt (k)."})
    min_gap: float = field(default=0.1, metadata={"help": (
        "Pairs whose labeller scores differ by less are ties: the rater is indifferent, no comparison.")})
    noise_temperature: float = field(default=0.0, metadata={"help": (
        "Bradley-Terry rater noise: P(a preferred) = sigmoid((s_a - s_b) / T); 0 = always the higher score.")})
    flip_rate: float = field(default=0.0, metadata={"help": "Share of train labels flipped after the decision."})
    max_new_tokens: int = field(default=DECODING.max_new_tokens, metadata={"help": "Most tokens per sampled response."})
    temperature: float = field(default=DECODING.temperature, metadata={"help": "Sampling temperature (> 0)."})
    max_prompt_tokens: int = field(default=128, metadata={"help": "Prompts longer than this keep their last tokens."})
    batch_size: int = field(default=64, metadata={"help": "Responses per sampling call."})
    seed_offset: int = field(default=7, metadata={"help": "Added to the recipe seed (the pipeline adds 10 per round)."})

    def __post_init__(self):
        check(self.rounds >= 1, f"rounds: must be >= 1, got {self.rounds}")
        check(self.labeller in LABELLERS, f"labeller: must be one of {list(LABELLERS)}, got {self.labeller!r}")
        check(self.comparisons > 0, f"comparisons: must be positive, got {self.comparisons}")
        check(self.test_prompts >= 0, f"test_prompts: must be >= 0, got {self.test_prompts}")
        check(self.samples_per_prompt >= 2, f"samples_per_prompt: need at least 2, got {self.samples_per_prompt}")
        check(self.min_gap >= 0, f"min_gap: must be >= 0, got {self.min_gap}")
        check(self.noise_temperature >= 0, f"noise_temperature: must be >= 0, got {self.noise_temperature}")
        check(0 <= self.flip_rate <= 0.5, f"flip_rate: must be in [0, 0.5], got {self.flip_rate}")
        check(self.max_new_tokens > 0 and self.max_prompt_tokens > 0, "max_new_tokens and max_prompt_tokens: must be > 0")
        check(self.temperature > 0, f"temperature: must be > 0 (samples must differ), got {self.temperature}")
        check(self.batch_size > 0, f"batch_size: must be positive, got {self.batch_size}")

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature)


# ----------------------------------------------------------------------------- the rater (pure)


def preference_probability(gap: float, temperature: float) -> float:
    """P(first preferred) under Bradley-Terry with temperature T on a score gap; T = 0: a step (0.5 at 0)."""
    if temperature == 0:
        return 1.0 if gap > 0 else 0.0 if gap < 0 else 0.5
    return 1.0 / (1.0 + math.exp(-gap / temperature))


def compare(scores: Sequence[float], min_gap: float, temperature: float, flip_rate: float,
            rng: random.Random | None) -> list[tuple[int, int, bool]]:
    """A prompt's k labeller scores -> (chosen index, rejected index, flipped) per decided pair.

    Pairs with |s_i - s_j| < min_gap are ties (no comparison). With temperature 0 and
    flip_rate 0 no random number is drawn, so rng may be None.
    """
    out = []
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            gap = scores[i] - scores[j]
            if abs(gap) < min_gap or gap == 0:
                continue
            p = preference_probability(gap, temperature)
            first = p == 1.0 or (p > 0.0 and rng.random() < p)
            flipped = flip_rate > 0 and rng.random() < flip_rate
            if flipped:
                first = not first
            out.append((i, j, flipped) if first else (j, i, flipped))
    return out


ASSISTANT_TURN = "\n\nAssistant:"


def distinct(responses: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each distinct (stripped, non-empty) response that can be an HH row.

    A response holding an "\n\nAssistant:" turn is left out: HH text is split at its last
    such turn, so part of the response would be read back as prompt.
    """
    seen: dict[str, int] = {}
    for i, r in enumerate(responses):
        if r.strip() and r.strip() not in seen and ASSISTANT_TURN not in r:
            seen[r.strip()] = i
    return list(seen.values())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


def within_prompt_rank_correlation(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[float, int]:
    """Mean Spearman correlation over prompts of (scores, reference scores); prompts where either is constant skip.

    Returns (mean, prompts counted); nan when none counts.
    """
    values = [c for a, b in groups if len(a) > 1 for c in [spearman(a, b)] if not math.isnan(c)]
    return (sum(values) / len(values) if values else float("nan")), len(values)


# ----------------------------------------------------------------------------- labellers


Scorer = Callable[[list[str], list[str]], list[float]]


def gold_scorer() -> Scorer:
    from .synthetic.gold import gold_score

    return lambda prompts, responses: [gold_score(p, r) for p, r in zip(prompts, responses)]


def reward_model_scorer(path: str | Path, batch_size: int = 32) -> Scorer:
    from .modeling import RewardModel, context_length

    rm = RewardModel.load(path)
    rm.model.to("cuda" if torch.cuda.is_available() else "cpu")

    def score(prompts, responses):
        raw = rm.score(list(prompts), list(responses), batch_size=batch_size, max_length=context_length(rm.model))
        return [float(v) for v in rm.normalise(raw)]

    return score


def function_scorer(spec: str) -> Scorer:
    from .ppo.trainer import load_reward_function

    fn = load_reward_function(spec)

    def score(prompts, responses):
        out = [float(v) for v in fn(list(prompts), list(responses))]
        if len(out) != len(responses):
            raise ValueError(f"label.labeller_path {spec}: returned {len(out)} scores for {len(responses)} responses")
        return out

    return score


def make_scorer(cfg: LabelConfig, recipe, output_dir: Path) -> tuple[Scorer, str]:
    """The labeller's scoring function and its provenance name."""
    from .rundir import require_stage

    if cfg.labeller == "gold":
        if str(recipe.data.dataset) != "embedded":
            raise ValueError(f"label.labeller gold: the gold judge exists only for the embedded dataset, "
                             f"not {recipe.data.dataset!r}; use reward_model, function or votes")
        return gold_scorer(), "gold judge of the embedded world (simulated rater)"
    if cfg.labeller == "reward_model":
        path = cfg.labeller_path or str(require_stage(output_dir / "reward", "label.labeller reward_model"))
        return reward_model_scorer(path), f"reward model {path}"
    return function_scorer(cfg.labeller_path), f"reward function {cfg.labeller_path}"


# ----------------------------------------------------------------------------- sampling and labelling


def sample_groups(policy, tokenizer, prompts: Sequence[str], cfg: LabelConfig, seed: int) -> list[list[str]]:
    """k responses per prompt, each batch sampled with its own seeded generator."""
    from .sampling import generate

    k = cfg.samples_per_prompt
    flat = [p for p in prompts for _ in range(k)]
    per_call = max(k, cfg.batch_size - cfg.batch_size % k)  # whole prompts per call
    texts: list[str] = []
    for i in range(0, len(flat), per_call):
        texts += generate(policy, tokenizer, flat[i:i + per_call], cfg.generation, seed=seed + i,
                          max_prompt_tokens=cfg.max_prompt_tokens).texts
    return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]


def score_groups(scorer: Scorer, prompts: Sequence[str], groups: Sequence[Sequence[str]]) -> list[list[float]]:
    """One scorer call for every response of every prompt, regrouped per prompt."""
    flat = scorer([p for p, g in zip(prompts, groups) for _ in g], [r for g in groups for r in g])
    out, i = [], 0
    for g in groups:
        out.append([float(v) for v in flat[i:i + len(g)]])
        i += len(g)
    return out


def label_prompts(prompts: Sequence[str], groups: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                  cfg: LabelConfig, rng: random.Random | None, noisy: bool, budget: int | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
    """HH rows {chosen, rejected, prompt_index, gap, flipped} from scored groups, at most `budget`; and flips."""
    rows, flips = [], 0
    for pi, (prompt, group, s) in enumerate(zip(prompts, groups, scores)):
        keep = distinct(group)
        decided = compare([s[i] for i in keep], cfg.min_gap, cfg.noise_temperature if noisy else 0.0,
                          cfg.flip_rate if noisy else 0.0, rng)
        for a, b, flipped in decided:
            if budget is not None and len(rows) >= budget:
                return rows, flips
            ca, cb = keep[a], keep[b]
            rows.append({"chosen": prompt + group[ca], "rejected": prompt + group[cb], "prompt_index": pi,
                         "gap": round(s[ca] - s[cb], 6), "flipped": flipped})
            flips += flipped
    return rows, flips


def _unique_prompts(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["prompt"] for r in rows))


def resolve_policy(cfg: LabelConfig, output_dir: Path) -> Path:
    from .rundir import is_complete, require_stage

    if cfg.policy == "auto":
        sft = output_dir / "sft"
        return require_stage(sft if is_complete(sft) else output_dir / "base", "label policy (sft, else base)")
    if cfg.policy in ("sft", "base", "ppo"):
        return require_stage(output_dir / cfg.policy, f"label.policy {cfg.policy}")
    return require_stage(Path(cfg.policy), "label.policy")


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    from .rundir import write_text

    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def votes_rows(cfg: LabelConfig) -> list[dict[str, str]]:
    """The Space's blind votes (an HH file from `rlhf votes --blind-only`) as HH rows, validated."""
    from .data import DataConfig, load_preferences

    rows, _ = load_preferences(DataConfig(dataset=str(cfg.labeller_path), file_test_fraction=0.0, on_bad_rows="error"),
                               "train")
    return [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in rows]


def main(recipe, output_dir: Path, resume: bool = False, name: str = "label") -> Path:
    """Labels the policy's samples into OUTPUT/<name> (default OUTPUT/label) and returns it."""
    from .config import stage_config
    from .data import load_preferences
    from .modeling import load_causal_lm, load_tokenizer
    from .rundir import StageWriter, finite, write_json

    cfg: LabelConfig = recipe.label
    output_dir = Path(output_dir)
    seed = recipe.seed + cfg.seed_offset
    # checked here, not in LabelConfig: flags are applied one at a time (--label.labeller, then its path)
    if cfg.labeller in ("function", "votes") and not cfg.labeller_path:
        raise ValueError(f"label.labeller_path: the {cfg.labeller} labeller needs one")
    t0 = time.time()

    provenance: dict[str, Any] = {"stage": name, "labeller": cfg.labeller, "seed": seed,
                                  "noise": {"temperature": cfg.noise_temperature, "flip_rate": cfg.flip_rate,
                                            "min_gap": cfg.min_gap}}
    if cfg.labeller == "votes":
        rows = votes_rows(cfg)
        provenance.update(policy="the models shown in the Space", labeller_name=f"blind votes {cfg.labeller_path}",
                          comparisons=len(rows), test_comparisons=0)
        with StageWriter(output_dir, name, resume=resume) as w:
            write_jsonl(w.path / "train.jsonl", rows)
            write_json(w.path / PROVENANCE, provenance)
            return w.finish(metrics={**provenance, "seconds": round(time.time() - t0, 2)},
                            config=stage_config(recipe, "label"))

    # 1. inputs, checked before anything is written
    policy_dir = resolve_policy(cfg, output_dir)
    train_rows, _ = load_preferences(recipe.data, recipe.data.train_split)
    test_rows, _ = load_preferences(recipe.data, recipe.data.test_split) if cfg.test_prompts else ([], None)
    scorer, labeller_name = make_scorer(cfg, recipe, output_dir)
    tokenizer = load_tokenizer(policy_dir)
    policy = load_causal_lm(policy_dir).eval()
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    prompts = _unique_prompts(train_rows)
    random.Random(seed).shuffle(prompts)
    test_prompts = _unique_prompts(test_rows)[: cfg.test_prompts]

    # 2.-3. train: sample and label chunks of prompts until the budget is spent
    rng = random.Random(seed + 1)
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    flips, used, sample_s, label_s = 0, 0, 0.0, 0.0
    chunk = max(1, cfg.batch_size // cfg.samples_per_prompt) * 4
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.comparisons, desc=f"{name}: comparisons", unit="pair", leave=False)
    with torch.no_grad():
        while len(rows) < cfg.comparisons and used < len(prompts):
            batch = prompts[used:used + chunk]
            t = time.time()
            groups = sample_groups(policy, tokenizer, batch, cfg, seed + 100_003 * (used // chunk + 1))
            sample_s += time.time() - t
            t = time.time()
            scores = score_groups(scorer, batch, groups)
            new, f = label_prompts(batch, groups, scores, cfg, rng, noisy=True, budget=cfg.comparisons - len(rows))
            label_s += time.time() - t
            for r in new:
                r["prompt_index"] += used
            rows += new
            flips += f
            samples += [{"split": "train", "prompt": p, "responses": list(g), "scores": list(s)}
                        for p, g, s in zip(batch, groups, scores)]
            used += len(batch)
            bar.update(len(new))
        bar.close()
        if len(rows) < cfg.comparisons:
            logger.warning("%s: every train prompt was sampled and gave %d of the %d comparisons asked for",
                           name, len(rows), cfg.comparisons)
        # the held-out split: labelled without noise, so it measures against the labeller's truth
        test, test_groups, test_scores = [], [], []
        if test_prompts:
            test_groups = sample_groups(policy, tokenizer, test_prompts, cfg, seed + 7_919)
            test_scores = score_groups(scorer, test_prompts, test_groups)
            test, _ = label_prompts(test_prompts, test_groups, test_scores, cfg, None, noisy=False)
            samples += [{"split": "test", "prompt": p, "responses": list(g), "scores": list(s)}
                        for p, g, s in zip(test_prompts, test_groups, test_scores)]
    if not rows:
        raise ValueError(f"{name}: no comparisons: every pair of samples was within min_gap {cfg.min_gap}")

    train_scores = [v for s in samples if s["split"] == "train" for v in s["scores"]]
    provenance.update(
        policy=str(policy_dir), labeller_name=labeller_name, comparisons=len(rows), flipped=flips,
        flip_share=flips / len(rows), test_comparisons=len(test), prompts=used, test_prompts=len(test_prompts),
        samples_per_prompt=cfg.samples_per_prompt,
        decoding={"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                  "max_prompt_tokens": cfg.max_prompt_tokens},
        mean_label_score=sum(train_scores) / len(train_scores))
    with StageWriter(output_dir, name, resume=resume) as w:
        write_jsonl(w.path / "train.jsonl", rows)
        if test:
            write_jsonl(w.path / "test.jsonl", test)
        write_jsonl(w.path / SAMPLES, samples)
        write_json(w.path / PROVENANCE, finite(provenance))
        metrics = {**provenance, "sample_s": round(sample_s, 2), "label_s": round(label_s, 2),
                   "seconds": round(time.time() - t0, 2)}
        logger.info("%s: %d comparisons (%d flipped) from %d prompts of %s, %d held-out; sampling %.1f s",
                    name, len(rows), flips, used, policy_dir, len(test), sample_s)
        return w.finish(metrics=finite(metrics), config=stage_config(recipe, "label"))


# ----------------------------------------------------------------------------- reading labels back


def read_label_rows(label_dir: Path, split: str) -> list[dict[str, str]]:
    """A label directory's split as {prompt, chosen, rejected} rows, through the dataset reader (validated)."""
    from .data import DataConfig, load_preferences

    if not (Path(label_dir) / f"{split}.jsonl").is_file():
        return []
    rows, _ = load_preferences(DataConfig(dataset=str(label_dir), on_bad_rows="error"), split)
    return list(rows)


def read_samples(label_dir: Path, split: str) -> list[dict[str, Any]]:
    path = Path(label_dir) / SAMPLES
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON: {e.msg}") from None
            if row.get("split") == split:
                out.append(row)
    return out
