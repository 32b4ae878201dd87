"""Stage 2: the pairwise reward model, with TRL's ``RewardTrainer``.

Steps (``main``):
  1. Start from the SFT model (``OUTPUT/sft``; ``OUTPUT/base`` when SFT was
     skipped) as a ``GPT2ForSequenceClassification`` with one label: GPT-2 plus
     a fresh scalar head (Ouyang et al. 2022 initialise the RM from the SFT model).
  2. Measure the untrained model on the held-out test pairs (the chance-level
     baseline), and the "longer response wins" baseline (a useless RM that only
     learned length would match it).
  3. Train on (prompt, chosen, rejected) with the Bradley-Terry loss
     -log sigmoid(r_chosen - r_rejected). Each text is ``prompt + response + EOS``
     and the score is read at its last real token (the EOS).
  4. Measure, with our own code (``gpt2_rlhf.train.modeling.RewardModel.score``, which pools
     at ``last_token_index(attention_mask)``, never at padding): held-out pairwise
     accuracy (ties count as errors), mean margin, and a health report (score vs
     length correlation, score distributions of chosen and rejected).
  5. Normalisation statistics: sample responses from the SFT policy for some
     train prompts, score them, store mean and std in ``reward_stats.json`` so PPO
     and evaluation use (raw - mean) / std (lm-human-preferences normalises the
     RM on policy samples the same way, Ziegler et al. 2019).
  6. Save model + tokenizer + reward_stats.json + health.json + metrics.json
     through ``StageWriter`` into ``OUTPUT/reward``.

Deviations: lm-human-preferences normalises to mean 0 / std 1 by adjusting the
head's gain and bias; we keep the raw head and store the statistics beside it.
InstructGPT trains one epoch over K-choose-2 comparisons per prompt; we have one
pair per prompt. Pairs longer than the context are dropped by ``gpt2_rlhf.train.data``
(counted and logged), not truncated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from .config import check, to_plain
from .hf_training import TrainerFields, trainer_field
from .modeling import saved_context_length
from .sampling import DECODING

logger = logging.getLogger(__name__)

HEALTH = "health.json"
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass
class RewardStageConfig(TrainerFields):
    """Stage 2: the reward model (section ``reward``): the TrainingArguments fields of ``TrainerFields``
    (learning rate 1e-5, the seed card's; every held-out pair measured), then its own."""

    learning_rate: float = trainer_field("learning_rate", default=1e-5)
    per_device_eval_batch_size: int = trainer_field("per_device_eval_batch_size", default=32)
    max_eval_samples: int | None = trainer_field("max_eval_samples", default=None)

    init_from: str = field(default="auto", metadata={
        "help": "auto: OUTPUT/sft when finished, else OUTPUT/base; or 'sft', 'base', or a model path/Hub id."})
    n_layer: int | None = field(default=None, metadata={"help": (
        "Transformer blocks the reward model keeps of its starting model: the first N (and the judges', and the "
        "PPO critic's, which starts from the reward model). A shallower reward model costs less to train and to "
        "run; null: all of them.")})
    center_rewards_coefficient: float | None = field(default=None, metadata={
        "help": "Adds coef * mean((r_c + r_r)^2) to keep raw scores near 0 (Eisenstein et al. 2023); null: off."})
    stats_prompts: int = field(default=64, metadata={
        "help": "Train prompts whose SFT-policy samples give the normalisation mean/std."})
    stats_max_new_tokens: int = field(default=DECODING.max_new_tokens, metadata={"help": "Sampled response length for the statistics."})
    stats_temperature: float = field(default=DECODING.temperature, metadata={"help": "Sampling temperature for the statistics (0 = greedy)."})
    histogram_bins: int = field(default=20, metadata={"help": "Bins of the score histograms in health.json."})
    labels: list[str] = field(default_factory=list, metadata={"help": (
        "Label directories (written by `rlhf label`) whose train comparisons are added to the dataset pairs; "
        "`rlhf run` fills in every feedback round so far. The last one's held-out comparisons measure the "
        "model on policy samples.")})
    labelled_repeats: int = field(default=1, metadata={"help": (
        "The mix: each labelled comparison appears this many times per epoch beside each dataset pair once.")})
    warm_start: bool = field(default=False, metadata={"help": (
        "Feedback rounds 2+: `rlhf run` starts the round's model from the previous round's reward model "
        "(init_from), and it trains on the newest label directory's comparisons plus `replay` times as many "
        "earlier pairs, so a round costs its own labels rather than the whole history. false: every round "
        "starts from SFT and trains on every pair.")})
    replay: float = field(default=1.0, metadata={"help": (
        "With warm_start, earlier pairs (dataset pairs and earlier labels, drawn with the recipe seed) per "
        "newest labelled comparison.")})
    max_round_pairs: int | None = field(default=None, metadata={"help": (
        "A fresh (not warm-started) feedback round's training pairs: the newest label directory's comparisons "
        "(x labelled_repeats) all, then a seeded sample of the dataset pairs and earlier labels up to this "
        "many in total (none when the newest alone reach it). It bounds a round's cost by the cap instead of "
        "the whole history. null: every pair.")})
    later_dataset_pairs: int | None = field(default=None, metadata={"help": (
        "A fresh (not warm-started, uncapped) reward model in feedback rounds 2+: how many of the dataset pairs (a "
        "seeded sample) it trains on beside every label so far, which it all keeps. The dataset pairs are off-policy; "
        "the labels are of the policy's own samples. null: all of them, as in round 1.")})
    judges: int = field(default=0, metadata={"help": (
        "Judges PPO never sees, for its reward-hacking monitor (ppo.monitor_every): this many more reward models "
        "trained like the proxy on every train pair (held-out ones included) with seeds recipe seed + "
        "judge_seed_offset + i, so their head initialisations and data orders differ (an ensemble, Coste et al. "
        "2023; Eisenstein et al. 2023), saved as reward/judges/seed-<s>/. 0: none.")})
    judge_holdout: float = field(default=0.0, metadata={"help": (
        "Share of the train pairs (dataset pairs and labelled comparisons, each drawn with the recipe seed) "
        "withheld from the proxy reward model; a judge trained on them alone is saved as reward/judges/holdout/. "
        "0: the proxy trains on every pair and there is no held-out judge.")})
    judge_augment: float = field(default=0.0, metadata={"help": (
        "Per judge train pair, this many more pairs that no preference data holds, for the judges only (drawn "
        "from each judge's own pairs with its seed; `augmented_pairs`): its chosen response against another "
        "prompt's chosen response, or against itself cut short. They teach the judges what the proxy never saw "
        "a bad example of, so their errors differ from the proxy's. 0: none.")})
    judge_seed_offset: int = field(default=100, metadata={"help": (
        "Added to the recipe seed for the judges' seeds (the held-out judge uses the first).")})
    judge_init_from: str = field(default="auto", metadata={"help": (
        "Where the judges start: auto = the SFT model (else base), also when the proxy is warm-started from an "
        "earlier round; or 'sft', 'base', or a model path/Hub id (a different start decorrelates their errors "
        "from the proxy's more than a different seed, Eisenstein et al. 2023).")})

    def __post_init__(self):
        check(bool(self.init_from.strip()), "init_from: must be auto, sft, base or a model path")
        super().__post_init__()
        check(self.n_layer is None or self.n_layer >= 1, f"n_layer: must be >= 1 or null, got {self.n_layer}")
        check(self.histogram_bins > 0, f"histogram_bins: must be positive, got {self.histogram_bins}")
        check(self.labelled_repeats >= 1, f"labelled_repeats: must be >= 1, got {self.labelled_repeats}")
        check(self.replay >= 0, f"replay: must be >= 0, got {self.replay}")
        check(self.max_round_pairs is None or self.max_round_pairs > 0,
              f"max_round_pairs: must be positive or null, got {self.max_round_pairs}")
        check(self.later_dataset_pairs is None or self.later_dataset_pairs >= 0,
              f"later_dataset_pairs: must be >= 0 or null, got {self.later_dataset_pairs}")
        check(self.later_dataset_pairs is None or not (self.warm_start or self.max_round_pairs is not None),
              "later_dataset_pairs: only for fresh, uncapped rounds; with warm_start or max_round_pairs the earlier "
              "pairs are already a replay sample")
        check(self.judges >= 0, f"judges: must be >= 0, got {self.judges}")
        check(0 <= self.judge_holdout < 1, f"judge_holdout: must be in [0, 1), got {self.judge_holdout}")
        check(self.judge_augment >= 0, f"judge_augment: must be >= 0, got {self.judge_augment}")
        check(bool(self.judge_init_from.strip()), "judge_init_from: must be auto, sft, base or a model path")
        check(self.stats_prompts >= 2, f"stats_prompts: need at least 2 samples for a std, got {self.stats_prompts}")
        check(self.stats_max_new_tokens > 0, f"stats_max_new_tokens: must be positive, got {self.stats_max_new_tokens}")
        check(self.stats_temperature >= 0, f"stats_temperature: must be >= 0, got {self.stats_temperature}")


# ----------------------------------------------------------------------------- maths (pure, unit-tested)


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """(N,) scores -> share of pairs with chosen strictly above rejected (a tie is an error)."""
    return (chosen > rejected).float().mean().item() if len(chosen) else float("nan")


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two (N,) tensors; nan when either is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = (x.square().sum() * y.square().sum()).sqrt()
    return (x * y).sum().div(denom).item() if denom > 0 else float("nan")


def score_summary(scores: torch.Tensor, edges: torch.Tensor) -> dict[str, Any]:
    """(N,) scores -> mean, std, named quantiles and counts per histogram bin (edges (K+1,))."""
    s = scores.double()
    q = torch.quantile(s, torch.tensor(QUANTILES, dtype=torch.double))
    counts = torch.histogram(s.clamp(edges[0], edges[-1]), bins=edges.double()).hist
    return {"mean": s.mean().item(), "std": s.std().item() if len(s) > 1 else 0.0,
            "quantiles": {f"q{int(p * 100):02d}": v.item() for p, v in zip(QUANTILES, q)},
            "histogram": [int(c) for c in counts]}


def normalisation_stats(raw: torch.Tensor) -> tuple[float, float]:
    """(N,) raw scores of policy samples -> (mean, std) with the unbiased std, floored to stay invertible."""
    return raw.double().mean().item(), max(raw.double().std().item(), 1e-6)


# ----------------------------------------------------------------------------- measurement


def token_lengths(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return torch.tensor([len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]])


def evaluate_pairs(rm, rows: Sequence[dict], batch_size: int, bins: int = 20) -> tuple[dict, dict]:
    """Our own measurement of a reward model on preference rows: (metrics, health)."""
    prompts = [r["prompt"] for r in rows]
    chosen = rm.score(prompts, [r["chosen"] for r in rows], batch_size=batch_size)
    rejected = rm.score(prompts, [r["rejected"] for r in rows], batch_size=batch_size)
    len_c = token_lengths(rm.tokenizer, [r["chosen"] for r in rows])
    len_r = token_lengths(rm.tokenizer, [r["rejected"] for r in rows])
    acc = pairwise_accuracy(chosen, rejected)
    metrics = {
        "accuracy": acc,
        "mean_margin": (chosen - rejected).mean().item(),
        "ties": int((chosen == rejected).sum()),
        "pairs": len(rows),
        "length_baseline_accuracy": pairwise_accuracy(len_c.float(), len_r.float()),
        "length_baseline_accuracy_chars": pairwise_accuracy(
            torch.tensor([float(len(r["chosen"])) for r in rows]), torch.tensor([float(len(r["rejected"])) for r in rows])),
    }
    both = torch.cat([chosen, rejected])
    lo, hi = both.min().item(), both.max().item()
    edges = torch.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    health = {
        "accuracy": acc,
        "score_length_correlation": pearson(both, torch.cat([len_c, len_r]).float()),
        "histogram_edges": edges.tolist(),
        "chosen": score_summary(chosen, edges),
        "rejected": score_summary(rejected, edges),
    }
    return metrics, health


def on_policy_metrics(rm, label_dir: Path, batch_size: int, initial_accuracy: float | None = None) -> dict[str, Any]:
    """The reward model on held-out labelled pairs of policy samples (a label directory's test split).

    accuracy: share of pairs where the labeller's preferred response scores higher;
    length_baseline_accuracy: the same for "the longer response wins" (tokens);
    rank_correlation: mean within-prompt Spearman correlation of the reward model's
    scores with the labeller's scores over every sampled response (null without scores).
    """
    from .feedback import read_label_rows, read_samples, within_prompt_rank_correlation

    rows = read_label_rows(label_dir, "test")
    if not rows:
        return {}
    metrics, _ = evaluate_pairs(rm, rows, batch_size)
    out: dict[str, Any] = {"accuracy": metrics["accuracy"], "length_baseline_accuracy": metrics["length_baseline_accuracy"],
                           "pairs": len(rows), "prompts": len({r["prompt"] for r in rows}), "source": str(label_dir)}
    if initial_accuracy is not None:
        out["initial_accuracy"] = initial_accuracy
    groups = read_samples(label_dir, "test")
    if groups:
        flat_p = [g["prompt"] for g in groups for _ in g["responses"]]
        flat_r = [r for g in groups for r in g["responses"]]
        raw = rm.score(flat_p, flat_r, batch_size=batch_size).tolist()
        pairs, i = [], 0
        for g in groups:
            pairs.append((raw[i:i + len(g["responses"])], g["scores"]))
            i += len(g["responses"])
        out["rank_correlation"], out["rank_correlation_prompts"] = within_prompt_rank_correlation(pairs)
    return out


def policy_samples(policy_dir: Path, prompts: Sequence[str], cfg: RewardStageConfig, seed: int) -> list[str]:
    """Responses sampled from the policy at policy_dir (batched, KV-cached, truncated after EOS)."""
    from .modeling import load_causal_lm, load_tokenizer
    from .sampling import GenerationSettings, generate

    tok = load_tokenizer(policy_dir)
    policy = load_causal_lm(policy_dir).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy.to(device)
    settings = GenerationSettings(max_new_tokens=cfg.stats_max_new_tokens, temperature=cfg.stats_temperature)
    texts: list[str] = []
    for i in range(0, len(prompts), cfg.per_device_eval_batch_size):
        gen = generate(policy, tok, prompts[i:i + cfg.per_device_eval_batch_size], settings, seed=seed + i)
        texts.extend(gen.texts)
    return texts


def gold_correlation(prompts: Sequence[str], responses: Sequence[str], raw: torch.Tensor) -> float | None:
    """Embedded data only: correlation of RM scores with the synthetic world's gold judge on policy samples."""
    from .synthetic.gold import gold_score

    gold = torch.tensor([gold_score(p, r) for p, r in zip(prompts, responses)])
    return pearson(raw, gold)


def format_health(h: dict) -> str:
    c, r = h["chosen"], h["rejected"]
    return (f"accuracy {h['accuracy']:.3f} | corr(score, length) {h['score_length_correlation']:+.3f} | "
            f"chosen mean {c['mean']:+.3f} median {c['quantiles']['q50']:+.3f} | "
            f"rejected mean {r['mean']:+.3f} median {r['quantiles']['q50']:+.3f}")


# ----------------------------------------------------------------------------- stage


def labelled_rows(label_dirs: Sequence[str], tokenizer, max_length: int, truncation: str = "drop") -> list[dict]:
    """Every label directory's train comparisons within the context, by the recipe's `data.truncation`: the
    rest are dropped and counted (`drop`), or their prompts cut from the left at a turn (`keep_end`), as the
    dataset pairs beside them are."""
    from .data import DataConfig, load_preferences
    from .rundir import require_stage

    rows: list[dict] = []
    for d in label_dirs:
        got, _ = load_preferences(DataConfig(dataset=str(require_stage(Path(d), "reward.labels")),
                                             truncation=truncation), "train",
                                       tokenizer=tokenizer, max_length=max_length - 1)
        rows += got
    return rows


def replay_sample(rows: Sequence[dict], n: int, seed: int) -> list[dict]:
    """n rows drawn without replacement (all of them when n >= len(rows)), in a seeded order."""
    import random

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in sorted(order[:n])]


def holdout_split(rows: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(kept, held out): round(fraction * len(rows)) rows drawn with the seed are held out; both keep file order.

    fraction 0 holds out nothing (the rows come back as they are)."""
    import random

    n = round(fraction * len(rows))
    if n <= 0:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def cut_short(response: str, words: int) -> str:
    """The response's first `words` words, ended with its own last character when that is punctuation.

    Keeping the closing mark means a judge cannot tell a cut response by a missing full stop alone."""
    parts = response.split()
    end = response.rstrip()[-1:] if response.rstrip()[-1:] in ".!?" else ""
    cut = " ".join(parts[:words]).rstrip(".,;:!?")
    return (" " if response[:1].isspace() else "") + cut + end


def augmented_pairs(rows: Sequence[dict], share: float, seed: int) -> list[dict]:
    """round(share * len(rows)) pairs that no preference data holds, for the judges (reward.judge_augment).

    Draw k (seeded, with replacement) keeps a row's prompt and chosen response; its rejected one is
      * even k: the chosen response of another row with another prompt: an answer to another question
        (the non-contextual pairs of RRM, Liu et al. 2024, "RRM: Robust reward model training mitigates
        reward hacking");
      * odd k: the chosen response cut after a seeded 1..n-1 of its n words (`cut_short`): an answer that
        stops mid-thought.
    A draw with no such partner (one prompt only, a one-word response) is skipped. Deviations from RRM: it
    augments the proxy; here only the judges are, so that PPO's exploits of the proxy are not theirs. The cut
    kind makes the rejected side the shorter one, a length preference the judges learn on purpose: a third
    kind that appended another answer's sentence (rejected longer) took it away and with it the judges' fall
    as gold fell (benchmarks/monitor.py, docs/MONITOR.md).
    """
    import random

    rng = random.Random(seed)
    n = round(share * len(rows))
    out: list[dict] = []
    if not rows or n <= 0:
        return out
    for k in range(n):
        row = rows[rng.randrange(len(rows))]
        if k % 2 == 0:
            other = rows[rng.randrange(len(rows))]
            if other["prompt"] == row["prompt"] or other["chosen"].strip() == row["chosen"].strip():
                continue
            rejected = other["chosen"]
        else:
            words = len(row["chosen"].split())
            if words < 2:
                continue
            rejected = cut_short(row["chosen"], rng.randint(1, words - 1))
        out.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": rejected})
    return out


def judge_plan(cfg: RewardStageConfig, seed: int) -> list[tuple[str, int]]:
    """(name, seed) of each judge: `holdout` (when pairs are held out) first, then the seed ensemble."""
    first = seed + cfg.judge_seed_offset
    plan = [("holdout", first)] if cfg.judge_holdout > 0 else []
    return plan + [(f"seed-{s}", s) for s in range(first + len(plan), first + len(plan) + cfg.judges)]


def start_model(cfg: RewardStageConfig, init_dir):
    """The reward model (a fresh scalar head) from init_dir, keeping its first cfg.n_layer blocks when set.

    Raises a one-line error naming reward.n_layer when the start has fewer blocks than asked for: transformers
    would initialise the missing ones at random and train from noise."""
    from transformers import AutoConfig

    from .modeling import load_sequence_classifier

    if cfg.n_layer is None:
        return load_sequence_classifier(init_dir)
    have = AutoConfig.from_pretrained(str(init_dir), trust_remote_code=False).num_hidden_layers
    if cfg.n_layer > have:
        raise ValueError(f"reward.n_layer {cfg.n_layer}: the starting model {init_dir} has only {have} blocks")
    return load_sequence_classifier(init_dir, num_hidden_layers=cfg.n_layer)


def resolve_init(cfg: RewardStageConfig, output_dir: Path) -> tuple[Path | str, str]:
    """The model the RM starts from and its name: OUTPUT/sft, OUTPUT/base or a given path/id."""
    from .rundir import is_complete, require_stage

    if cfg.init_from == "auto":
        if is_complete(output_dir / "sft"):
            return output_dir / "sft", "sft"
        logger.warning("no finished %s: the reward model starts from the base model", output_dir / "sft")
        return require_stage(output_dir / "base", "reward needs the sft or base model"), "base"
    if cfg.init_from in ("sft", "base"):
        return require_stage(output_dir / cfg.init_from, f"reward.init_from {cfg.init_from}"), cfg.init_from
    return cfg.init_from, cfg.init_from


def build_trainer(recipe, model, tokenizer, train_rows, output_dir: Path, max_length: int, callbacks=None,
                  seed: int | None = None):
    """The configured RewardTrainer on {prompt, chosen, rejected} rows (seed: weights' and data order's;
    default the recipe's)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from .hf_training import trainer_arguments

    cfg: RewardStageConfig = recipe.reward
    args = RewardConfig(**trainer_arguments(cfg, recipe.seed if seed is None else seed, output_dir, max_length),
                        center_rewards_coefficient=cfg.center_rewards_coefficient, disable_dropout=True)
    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in train_rows])
    from .hf_training import resumable_checkpoints_callback

    return RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         callbacks=[resumable_checkpoints_callback(), *(callbacks or [])])


JUDGES = "judges"  # reward/judges/<name>/: reward models PPO never sees (its monitor's judges)


def resolve_judge_init(cfg: RewardStageConfig, output_dir: Path) -> tuple[Path | str, str]:
    """Where the judges start: judge_init_from, with auto = SFT (else base), never a warm-started proxy."""
    from dataclasses import replace

    return resolve_init(replace(cfg, init_from=cfg.judge_init_from, warm_start=False), output_dir)


def train_judge(recipe, name: str, seed: int, init_dir, rows: Sequence[dict], tokenizer, max_length: int, writer,
                resume: bool, state, test_rows: Sequence[dict], label_dir: Path | None,
                stats_samples: tuple[list[str], list[str]] | None) -> dict[str, Any]:
    """Trains one judge like the proxy (its seed, its rows) into <stage>/judges/<name>/; returns its metrics.

    Every process trains; the main one measures it on the test pairs (and held-out labelled pairs) and
    normalises it on the proxy's own SFT samples (stats_samples: prompts, responses), so that the judges'
    and the proxy's normalised scores share one scale: 0 and 1 on those samples."""
    from .hf_training import last_complete_checkpoint
    from .modeling import REWARD_STATS, RewardModel, ensure_pad_embedding
    from .rundir import write_json

    cfg: RewardStageConfig = recipe.reward
    t0 = time.time()
    if not rows:
        raise ValueError(f"reward judge {name}: no train pairs (reward.judge_holdout {cfg.judge_holdout} of the "
                         f"train pairs rounds to none)")
    torch.manual_seed(seed)
    model = start_model(cfg, init_dir)
    ensure_pad_embedding(model, tokenizer)
    ckpt = writer.checkpoints / JUDGES / name
    trainer = build_trainer(recipe, model, tokenizer, rows, ckpt, max_length, seed=seed)
    checkpoint = last_complete_checkpoint(ckpt) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    out: dict[str, Any] = {"seed": seed, "train_pairs": len(rows), "global_step": trainer.state.global_step}
    if state.is_main_process:
        path = writer.path / JUDGES / name
        path.mkdir(parents=True, exist_ok=True)
        trainer.save_model(str(path))
        tokenizer.save_pretrained(str(path))
        rm = RewardModel(trainer.model, tokenizer)
        after, _ = evaluate_pairs(rm, test_rows, cfg.per_device_eval_batch_size)
        out.update(accuracy=after["accuracy"], mean_margin=after["mean_margin"])
        if label_dir:
            on_policy = on_policy_metrics(rm, label_dir, cfg.per_device_eval_batch_size)
            if on_policy:
                out["on_policy_accuracy"] = on_policy["accuracy"]
        prompts, samples = stats_samples
        mean, std = normalisation_stats(rm.score(prompts, samples, batch_size=cfg.per_device_eval_batch_size))
        write_json(path / REWARD_STATS, {"mean": mean, "std": std, "n": len(prompts),
                                         "source": f"the proxy's normalisation samples ({len(prompts)})"})
        out["seconds"] = time.time() - t0
        write_json(path / "metrics.json", out)
    del trainer, model
    state.wait_for_everyone()
    return out


def judge_summary(judges: dict[str, dict], proxy: dict[str, Any], cfg: RewardStageConfig, held_dataset: int,
                  held_labelled: int) -> dict[str, Any]:
    """reward/metrics.json["judges"]: each judge's metrics, their cost, and what holding pairs out cost the proxy.

    proxy_accuracy_loss: the mean test accuracy of the judges trained on every pair minus the proxy's
    (trained without the held-out pairs); it includes seed noise (and reward.judge_augment's pairs, which only
    the judges see), and is null when no judge saw every pair."""
    full = [j["accuracy"] for name, j in judges.items() if name != "holdout"]
    out: dict[str, Any] = {"models": judges, "path": JUDGES, "seconds": sum(j["seconds"] for j in judges.values()),
                           "holdout_fraction": cfg.judge_holdout, "held_out_dataset_pairs": held_dataset,
                           "held_out_labelled_pairs": held_labelled}
    if cfg.judge_holdout > 0:
        out["proxy_accuracy_loss"] = (sum(full) / len(full) - proxy["accuracy"]) if full else None
        if "on_policy" in proxy:
            full_op = [j["on_policy_accuracy"] for n, j in judges.items() if n != "holdout" and "on_policy_accuracy" in j]
            out["proxy_on_policy_accuracy_loss"] = (sum(full_op) / len(full_op) - proxy["on_policy"]["accuracy"]
                                                    if full_op else None)
    return out


def main(recipe, output_dir: Path, resume: bool = False, callbacks: list | None = None, name: str = "reward") -> Path:
    """Trains the reward model into OUTPUT/<name> (default OUTPUT/reward) and returns it."""
    from .modeling import REWARD_STATS, RewardModel, ensure_pad_embedding, load_tokenizer
    from .config import stage_config
    from .feedback import read_label_rows
    from .rundir import StageWriter, is_complete, write_json
    from .hf_training import last_complete_checkpoint, load_rows, process_state, training_metrics
    from .rundir import finite

    cfg: RewardStageConfig = recipe.reward
    output_dir = Path(output_dir)
    state = process_state()
    if state.is_main_process:
        logger.info("reward config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    t_start = time.time()

    # 1. Inputs: the starting model, its tokenizer, the data (rows that fit the context).
    init_dir, init_name = resolve_init(cfg, output_dir)
    # the normalisation samples come from the policy PPO starts from: SFT (also when a warm-started round
    # starts from the previous round's reward model), else base
    policy_dir = output_dir / ("base" if init_name == "base" or not is_complete(output_dir / "sft") else "sft")
    tokenizer = load_tokenizer(init_dir, padding_side="right")
    max_length = min(cfg.max_length or 10**9, saved_context_length(init_dir))
    all_dataset = load_rows(recipe, "train", tokenizer, max_length, cfg.max_train_samples)
    test_rows = load_rows(recipe, "test", tokenizer, max_length, cfg.max_eval_samples)
    # judge_holdout: pairs the proxy (the model PPO optimises) never sees; a judge trains on them
    dataset_rows, held_dataset = holdout_split(all_dataset, cfg.judge_holdout, recipe.seed)
    warm = cfg.warm_start and len(cfg.labels) > 1
    capped = not warm and cfg.max_round_pairs is not None and len(cfg.labels) > 1
    # warm or capped: the newest labels all, the earlier pairs a seeded replay sample
    split = warm or capped
    all_labelled = labelled_rows(cfg.labels[-1:] if split else cfg.labels, tokenizer, max_length, recipe.data.truncation)
    labelled, held_labelled = holdout_split(all_labelled, cfg.judge_holdout, recipe.seed + 1)
    # the earlier label directories' rows (split rounds only), kept for the judges' "every label"
    earlier_labelled = labelled_rows(cfg.labels[:-1], tokenizer, max_length, recipe.data.truncation) if split else []
    if split:
        earlier = dataset_rows + earlier_labelled
        n = (round(cfg.replay * len(labelled)) if warm
             else max(0, cfg.max_round_pairs - len(labelled) * cfg.labelled_repeats))
        replayed = replay_sample(earlier, n, recipe.seed)
        train_rows = replayed + labelled * cfg.labelled_repeats
    else:
        replayed = None
        if cfg.later_dataset_pairs is not None and len(cfg.labels) > 1:
            dataset_rows = replay_sample(dataset_rows, cfg.later_dataset_pairs, recipe.seed)
        train_rows = dataset_rows + labelled * cfg.labelled_repeats
    dataset_pairs = len(dataset_rows)
    judges = judge_plan(cfg, recipe.seed)
    label_dir = Path(cfg.labels[-1]) if cfg.labels else None
    torch.manual_seed(recipe.seed)  # the fresh scalar head is random: seed it
    model = start_model(cfg, init_dir)
    ensure_pad_embedding(model, tokenizer)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    with StageWriter(output_dir, name, resume=resume, main_process=state.is_main_process) as writer:
        state.wait_for_everyone()
        metrics: dict[str, Any] = {"init_from": str(init_name), "train_pairs": len(train_rows),
                                   "dataset_pairs": dataset_pairs, "labelled_pairs": len(labelled),
                                   "held_out_pairs": len(held_dataset) + len(held_labelled),
                                   "labelled_repeats": cfg.labelled_repeats, "labels": list(cfg.labels),
                                   "replayed_pairs": None if replayed is None else len(replayed),
                                   "max_length": max_length, "world_size": state.num_processes}
        # 2. Baselines on the held-out pairs: the untrained model (random head) and response length. A
        # warm-started round starts from a trained model: its untrained baseline is the policy's own, fresh.
        if state.is_main_process:
            if not warm:
                untrained = model
            else:
                torch.manual_seed(recipe.seed)
                untrained = start_model(cfg, policy_dir)
                ensure_pad_embedding(untrained, tokenizer)
            untrained.to(device)
            before, _ = evaluate_pairs(RewardModel(untrained, tokenizer), test_rows, cfg.per_device_eval_batch_size)
            metrics["initial_accuracy"] = before["accuracy"]
            # the untrained head on the held-out policy pairs: its accuracy only (no rank correlation to waste)
            held_out = read_label_rows(label_dir, "test") if label_dir else []
            initial_on_policy = (evaluate_pairs(RewardModel(untrained, tokenizer), held_out,
                                                cfg.per_device_eval_batch_size)[0]["accuracy"] if held_out else None)
            del untrained
            model.train()

        # 3. Train (every rank), resuming from the last checkpoint when asked.
        trainer = build_trainer(recipe, model, tokenizer, train_rows, writer.checkpoints, max_length, callbacks)
        checkpoint = last_complete_checkpoint(writer.checkpoints) if resume else None
        out = trainer.train(resume_from_checkpoint=checkpoint)
        metrics.update(training_metrics(trainer, out, checkpoint))
        trainer.save_model(str(writer.path))

        if state.is_main_process:
            # 4. Held-out accuracy, margin, baselines and health, by our code.
            rm = RewardModel(trainer.model, tokenizer)
            after, health = evaluate_pairs(rm, test_rows, cfg.per_device_eval_batch_size, cfg.histogram_bins)
            metrics.update(after)
            metrics["accuracy_over_length_baseline"] = after["accuracy"] - after["length_baseline_accuracy"]
            if label_dir:
                on_policy = on_policy_metrics(rm, label_dir, cfg.per_device_eval_batch_size, initial_on_policy)
                if on_policy:
                    metrics["on_policy"] = on_policy
                    logger.info("reward model on held-out policy samples: %s", on_policy)

            # 5. Normalisation statistics on SFT-policy samples for train prompts.
            prompts = [r["prompt"] for r in train_rows[: cfg.stats_prompts]]
            samples = policy_samples(policy_dir, prompts, cfg, recipe.seed)
            raw = rm.score(prompts, samples, batch_size=cfg.per_device_eval_batch_size)
            mean, std = normalisation_stats(raw)
            source = (f"{policy_dir.name} samples for {len(prompts)} train "
                      f"prompts (temperature {cfg.stats_temperature}, max_new_tokens {cfg.stats_max_new_tokens}, "
                      f"seed {recipe.seed})")
            write_json(writer.path / REWARD_STATS, {"mean": mean, "std": std, "n": len(prompts), "source": source})
            health["policy_samples"] = {"source": source, "raw_mean": mean, "raw_std": std,
                                        "empty_responses": sum(not s.strip() for s in samples)}
            if recipe.data.dataset == "embedded":
                health["policy_samples"]["gold_correlation"] = gold_correlation(prompts, samples, raw)
            metrics.update(reward_mean=mean, reward_std=std)
            write_json(writer.path / HEALTH, finite(health))
            tokenizer.save_pretrained(str(writer.path))
            metrics["seconds"] = time.time() - t_start
            logger.info("reward model health: %s", format_health(health))
        state.wait_for_everyone()

        # 6. The judges (judge_holdout, judges): reward models PPO never sees, for its monitor.
        if judges:
            del trainer
            every_label = earlier_labelled + all_labelled  # every label directory's rows, in directory order
            data = {"holdout": held_dataset + held_labelled * cfg.labelled_repeats,
                    "all": all_dataset + every_label * cfg.labelled_repeats}
            judge_dir, judge_init = resolve_judge_init(cfg, output_dir)
            results = {}
            for judge_name, judge_seed in judges:
                rows = data["holdout" if judge_name == "holdout" else "all"]
                extra = augmented_pairs(rows, cfg.judge_augment, judge_seed)
                results[judge_name] = train_judge(
                    recipe, judge_name, judge_seed, judge_dir, rows + extra, tokenizer, max_length, writer, resume,
                    state, test_rows, label_dir, (prompts, samples) if state.is_main_process else None)
                results[judge_name].update(init_from=judge_init, augmented_pairs=len(extra))
            if state.is_main_process:
                metrics["judges"] = judge_summary(results, metrics, cfg, len(held_dataset), len(held_labelled))
                logger.info("judges: %s", metrics["judges"])
        if state.is_main_process:
            metrics["total_seconds"] = time.time() - t_start
            logger.info("reward metrics: %s", {k: v for k, v in metrics.items() if k != "loss_curve"})
        state.wait_for_everyone()
        writer.finish(metrics=finite(metrics), config=stage_config(recipe, "reward"))
    state.wait_for_everyone()
    return writer.final

