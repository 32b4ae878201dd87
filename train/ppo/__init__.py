"""Stage 3: PPO with a KL penalty -- our own actor-critic implementation for causal LMs.

Why it exists: TRL removed ``PPOTrainer`` in 1.13 (the seed script's
``PPOTrainer(reward_function=...)`` never existed at all), so the third stage of
the RLHF recipe is ours: small, tested, and faster than the last TRL one on the
shared benchmark (benchmarks/bench_ppo.py).

Papers followed:

* Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"
  (lm-human-preferences): the score of a sampled response from a learned reward
  model, normalised; a per-token KL penalty against the frozen SFT policy with a
  fixed or adaptive coefficient; the critic initialised from the reward model.
* Huang et al. 2024, "The N Implementation Details of RLHF with PPO": temperature-
  scaled log-probs, EOS truncation and the missing-EOS penalty, dropout off,
  GAE with gamma 1 / lambda 0.95, whitened advantages, clipped value loss,
  Adam epsilon 1e-5.
* Schulman et al. 2017 (PPO) and 2016 (GAE).

Modules: ``config`` (PPOConfig, the ``ppo:`` recipe section), ``core`` (pure tensor
maths, unit-tested by hand), ``trainer`` (rollout, score, update loop, checkpoints).
The deviations from the papers are listed in ``trainer``'s docstring.

``main(recipe, output_dir, resume)`` is the ``rlhf ppo`` stage:

1. Resolve and check the inputs: policy and reference from ``OUTPUT/sft`` (else
   ``OUTPUT/base``), reward model + ``reward_stats.json`` and critic from
   ``OUTPUT/reward`` (or a reward function, with the critic on the policy's backbone
   and a fresh scalar head); the training prompts. Nothing is written before this.
2. Train (``PPOTrainer.train``), appending ``metrics.jsonl`` and checkpointing every
   ``save_every`` updates into ``OUTPUT/ppo.partial/checkpoints`` (``--resume``).
3. Measure the SFT policy against the PPO policy on held-out prompts (mean
   normalised RM score, the SFT scores' std, KL to the reference, gold judge on the
   embedded data, reward-function score), beside the dataset's own chosen responses
   to the same prompts, and store it in ``metrics.json``.
4. Save the policy and tokenizer (Hugging Face format) and swap ``OUTPUT/ppo`` in.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

__all__ = ["CRITIC", "main", "compare_policies", "resolve_inputs", "score_dataset_responses"]


# ----------------------------------------------------------------------------- inputs


def resolve_inputs(cfg, output_dir: Path) -> dict[str, str | None]:
    """The model paths PPO reads, from the config or the run directory; StageError names a missing one."""
    from ..rundir import is_complete, require_stage, starting_policy

    out: dict[str, str | None] = {}
    out["policy"] = cfg.policy_path or str(starting_policy(output_dir, "ppo policy"))
    out["ref"] = cfg.ref_path or out["policy"]
    if cfg.reward_model_path:
        out["reward"] = cfg.reward_model_path
    elif cfg.reward_spec is None:
        out["reward"] = str(require_stage(output_dir / "reward", "ppo reward model"))
    else:  # a reward function or classifier; the reward model is optional (used only to report RM scores)
        out["reward"] = str(output_dir / "reward") if is_complete(output_dir / "reward") else None
    out["value"] = cfg.value_model_path or out["reward"] or out["policy"]
    for key in ("policy", "ref", "reward", "value"):
        p = out[key]
        if p and (p.startswith(("/", ".", "~")) or Path(p).exists()) and not Path(p).expanduser().is_dir():
            from ..rundir import StageError

            raise StageError(f"ppo {key} model: {p} is not a directory")
    return out


SNAPSHOTS = "snapshots"
CRITIC = "critic"  # the trained value model, a *ForSequenceClassification directory


def write_snapshot_index(stage_dir: Path, batch_size: int) -> list[dict[str, Any]]:
    """snapshots.json: [{update, episodes, path}] of the stage's snapshots/update-N directories, in order."""
    from ..rundir import write_json

    found = sorted(p for p in (stage_dir / SNAPSHOTS).glob("update-*") if p.is_dir())
    rows = [{"update": int(p.name.split("-")[1]), "episodes": int(p.name.split("-")[1]) * batch_size,
             "path": f"{SNAPSHOTS}/{p.name}"} for p in found]
    write_json(stage_dir / "snapshots.json", {"snapshots": rows})
    return rows


def _load_models(paths: dict[str, str | None], cfg):
    """Policy, reference, critic (None with shared_value_head), reward model (or None) and the tokenizer."""
    import torch

    from ..modeling import RewardModel, ensure_pad_embedding, load_causal_lm, load_sequence_classifier, load_tokenizer

    tokenizer = load_tokenizer(paths["policy"])
    policy = load_causal_lm(paths["policy"])
    ref = load_causal_lm(paths["ref"])
    for m in (policy, ref):  # dropout goes off in PPOTrainer, for every model it is given
        ensure_pad_embedding(m, tokenizer)
    rm = RewardModel.load(paths["reward"]) if paths["reward"] else None
    # The reference and the critic read the policy's token ids: their vocabularies must be the
    # policy's (a reward model with another tokenizer can still score, from decoded text, but it
    # cannot be the critic). Checked here, before anything is written.
    if paths["ref"] != paths["policy"] and load_tokenizer(paths["ref"]).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"ppo reference model {paths['ref']}: its tokenizer differs from the policy's "
                         f"({paths['policy']}); the KL penalty compares the two on the same token ids")
    if not cfg.shared_value_head and paths["value"] != paths["policy"]:
        value_tok = rm.tokenizer if rm is not None and paths["value"] == paths["reward"] else load_tokenizer(paths["value"])
        if value_tok.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"ppo value model {paths['value']}: its tokenizer differs from the policy's ({paths['policy']}), and "
                f"the critic reads the policy's token ids; use a reward model trained on this policy's tokenizer, or "
                f"set ppo.value_model_path to the policy or ppo.shared_value_head: true")
    critic = None
    if not cfg.shared_value_head:
        critic = load_sequence_classifier(paths["value"])
        ensure_pad_embedding(critic, tokenizer)
        if paths["value"] in (paths["policy"], paths["ref"]):
            # A causal LM has no scalar head: start the fresh one at 0 (values start at 0).
            torch.nn.init.zeros_(critic.score.weight)
    return policy, ref, critic, rm, tokenizer


def _prompts(rows: Sequence[dict]) -> list[str]:
    return [r["prompt"] for r in rows]


def prompt_only(recipe) -> bool:
    """Whether the recipe's PPO and evaluation read prompt-only data (the `prompts` section) rather than
    the preference data's prompts."""
    prompts = getattr(recipe, "prompts", None)
    return bool(prompts is not None and prompts.enabled)


def load_training_prompts(recipe, cfg, tokenizer, budget: int) -> tuple[list[str], list[str], list[dict], dict]:
    """(train prompts, held-out prompts, held-out preference rows (for the chosen reference; [] for
    prompt-only data), the `prompts` block of metrics.json). Held-out prompts only when eval_prompts > 0.

    Prompt-only data is checked against the rollout's prompt budget (`too_long`: counted or an error
    naming the line); preference prompts keep being cut to their last tokens by the trainer."""
    from ..data import load_preferences, load_prompts

    if prompt_only(recipe):
        pcfg = recipe.prompts
        train, train_report = load_prompts(pcfg, pcfg.train_split, tokenizer, budget)
        wanted = cfg.eval_prompts or cfg.monitor_every
        test, test_report = load_prompts(pcfg, pcfg.test_split, tokenizer, budget) if wanted else ([], None)
        info = {"source": pcfg.source, "template": pcfg.template, "train": train_report.as_dict(),
                "test": test_report.as_dict() if test_report else None}
        return train, list(dict.fromkeys(test)), [], info
    train_rows, _ = load_preferences(recipe.data, recipe.data.train_split)
    wanted = cfg.eval_prompts or cfg.monitor_every
    test_rows, _ = load_preferences(recipe.data, recipe.data.test_split) if wanted else ([], None)
    info = {"source": recipe.data.dataset, "template": "dialogue", "train": {"rows_kept": len(train_rows)},
            "test": {"rows_kept": len(test_rows)} if wanted else None}
    return _prompts(train_rows), list(dict.fromkeys(_prompts(test_rows))), test_rows, info


# ----------------------------------------------------------------------------- the monitor


def judge_dirs(cfg, reward_path: str | None) -> list[str]:
    """The monitor's judges: ppo.monitor_judges, else every <reward model>/judges/<name>/ (train.reward.JUDGES)."""
    from ..reward import JUDGES

    if cfg.monitor_judges:
        return list(cfg.monitor_judges)
    root = Path(reward_path) / JUDGES if reward_path else None
    return [str(p) for p in sorted(root.iterdir()) if p.is_dir()] if root and root.is_dir() else []


def build_monitor(cfg, prompts: Sequence[str], tokenizer, ref, rm, reward_fn, reward_path: str | None, device,
                  gold_fn=None, seed: int = 0):
    """The reward-hacking monitor (train/ppo/monitor.py) on the first monitor_prompts held-out prompts."""
    import torch

    from ..modeling import RewardModel, context_length
    from .monitor import Monitor

    def rm_scores(model, normalised: bool):
        return lambda ps, rs: model.score(ps, rs, batch_size=cfg.eval_batch_size, normalised=normalised,
                                          max_length=context_length(model.model))

    if reward_fn is not None:
        proxy = lambda ps, rs: torch.tensor([float(v) for v in reward_fn(ps, rs)])
    else:
        proxy = rm_scores(rm, cfg.normalise_reward)
    judges = {}
    for d in judge_dirs(cfg, reward_path):
        if not Path(d).is_dir():
            raise ValueError(f"ppo.monitor_judges: {d} is not a directory")
        judge = RewardModel.load(d)
        judge.model.to(device)
        judges[Path(d).name] = rm_scores(judge, True)
    if not judges:
        logger.warning("ppo.monitor_every is set but there are no judges (reward.judges, reward.judge_holdout or "
                       "ppo.monitor_judges): the monitor measures without warning")
    return Monitor(cfg, list(prompts)[: cfg.monitor_prompts], tokenizer, ref, proxy, judges, gold_fn, seed)


# ----------------------------------------------------------------------------- before/after


def compare_policies(policies: dict[str, Any], ref, tokenizer, prompts: Sequence[str], cfg,
                     reward_model=None, reward_fn: Callable | None = None,
                     gold_fn: Callable[[str, str], float] | None = None, seed: int = 1234,
                     batch_size: int = 32) -> dict[str, dict[str, float]]:
    """Samples each policy on the same prompts with the same seeds and the rollout settings; measures them.

    The evaluation's own measurement (`train.sampling.measure_policy`: the same sampler,
    seeds per batch, log-probs at the sampling temperature) and its scoring convention
    (the reward model reads `prompt + response + EOS` re-tokenised from text, within its
    context). Per policy: mean raw and normalised reward-model score and the normalised
    scores' std, mean KL(policy || ref) per response (sum of k1 over response tokens),
    reward-function mean and share > 0, gold judge mean, EOS rate and mean response
    length (tokens, EOS included).
    """
    import torch

    from ..modeling import context_length
    from ..sampling import measure_policy

    results: dict[str, dict[str, float]] = {}
    for name, policy in policies.items():
        m = measure_policy(policy, tokenizer, prompts, cfg.generation, seed, batch_size, cfg.max_prompt_tokens,
                           reference=None if policy is ref else ref, desc=f"{name}: held-out")
        res: dict[str, float] = {"n": len(prompts)}
        if reward_model is not None:
            raw = reward_model.score(list(prompts), m.texts, batch_size=batch_size,
                                     max_length=context_length(reward_model.model))
            norm = reward_model.normalise(raw)
            res.update(score=raw.mean().item(), score_norm=norm.mean().item(),
                       score_norm_std=norm.std().item() if len(norm) > 1 else 0.0)
        res["kl"] = float(sum(m.kl()) / len(prompts))
        if reward_fn is not None:
            fn = torch.tensor([float(v) for v in reward_fn(list(prompts), m.texts)])
            res.update(reward_fn=fn.mean().item(), reward_fn_positive=(fn > 0).float().mean().item())
        if gold_fn is not None:
            res["gold"] = sum(float(gold_fn(p, r)) for p, r in zip(prompts, m.texts)) / len(prompts)
        res["eos_rate"] = sum(m.eos) / len(prompts)
        res["response_length"] = sum(n + e for n, e in zip(m.lengths, m.eos)) / len(prompts)
        results[name] = {k: round(v, 6) if isinstance(v, float) else v for k, v in res.items()}
    return results


def score_dataset_responses(prompts: Sequence[str], responses: Sequence[str], reward_model=None,
                            gold_fn: Callable[[str, str], float] | None = None,
                            batch_size: int = 32) -> dict[str, float]:
    """The dataset's own (chosen) responses to the comparison prompts, scored like the policies' samples.

    Where the responses the reward model was trained to prefer sit: a policy that
    beats them by a wide margin on the reward model but not on the gold judge is
    exploiting the proxy. Long texts keep their end (the reward model's context).
    """
    from ..modeling import context_length

    res: dict[str, float] = {"n": len(prompts)}
    if reward_model is not None:
        raw = reward_model.score(list(prompts), list(responses), batch_size=batch_size,
                                 max_length=context_length(reward_model.model))
        norm = reward_model.normalise(raw)
        res.update(score=raw.mean().item(), score_norm=norm.mean().item(),
                   score_norm_std=norm.std().item() if len(norm) > 1 else 0.0)
    if gold_fn is not None:
        res["gold"] = sum(float(gold_fn(p, r)) for p, r in zip(prompts, responses)) / len(prompts)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in res.items()}


def summarise_comparison(cmp: dict[str, dict[str, float]]) -> dict[str, float]:
    """The headline numbers: score gain in SFT standard deviations, KL, gold and reward-function change."""
    sft, ppo = cmp["sft"], cmp["ppo"]
    out: dict[str, float] = {"kl": ppo["kl"]}
    if "score_norm" in sft:
        gain = ppo["score_norm"] - sft["score_norm"]
        out["score_norm_gain"] = round(gain, 6)
        std = sft["score_norm_std"]
        out["score_gain_in_sft_std"] = round(gain / std, 6) if std > 0 else None
        chosen = cmp.get("chosen", {})
        if "score_norm" in chosen and std > 0:
            out["chosen_score_in_sft_std"] = round((chosen["score_norm"] - sft["score_norm"]) / std, 6)
    if "gold" in sft:
        out["gold_gain"] = round(ppo["gold"] - sft["gold"], 6)
    if "reward_fn" in sft:
        out["reward_fn_gain"] = round(ppo["reward_fn"] - sft["reward_fn"], 6)
        out["reward_fn_positive_gain"] = round(ppo["reward_fn_positive"] - sft["reward_fn_positive"], 6)
    return out


def _log_comparison(cmp: dict, summary: dict) -> None:
    keys = [k for k in ("score", "score_norm", "score_norm_std", "kl", "gold", "reward_fn", "reward_fn_positive",
                        "eos_rate", "response_length") if k in cmp["sft"]]
    chosen = cmp.get("chosen", {})
    lines = [f"{'':>20} {'SFT':>10} {'PPO':>10} {'chosen':>10}"]
    lines += [f"{k:>20} {cmp['sft'][k]:>10.4f} {cmp['ppo'][k]:>10.4f} "
              + (f"{chosen[k]:>10.4f}" if k in chosen else f"{'-':>10}") for k in keys]
    lines += [f"{k:>20} {v if v is None else round(v, 4)}" for k, v in summary.items()]
    logger.info("held-out comparison on %d prompts (SFT policy vs PPO policy; chosen = the dataset's preferred "
                "responses):\n%s", cmp["sft"]["n"], "\n".join(lines))


# ----------------------------------------------------------------------------- the stage


def main(recipe, output_dir: Path, resume: bool = False, name: str = "ppo", round_index: int = 1) -> Path:
    """`rlhf ppo`: trains OUTPUT/<name> (default OUTPUT/ppo) from OUTPUT/sft and OUTPUT/reward (module docstring).

    round_index is the feedback round this PPO belongs to (recorded for the evaluation's curve).
    """
    import torch
    import yaml
    from accelerate import Accelerator

    from ..config import stage_config, to_plain
    from ..modeling import context_length
    from ..rundir import StageWriter
    from ..sampling import prompt_budget
    from .trainer import FunctionScorer, PPOTrainer, RewardModelScorer

    cfg = recipe.ppo
    output_dir = Path(output_dir)
    # cpu=True on a machine without GPUs: otherwise under torchrun / accelerate launch every rank
    # believes it is the only, main, process (see train/sft.py: process_state)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    seed = recipe.seed + cfg.seed_offset

    # 1. inputs, checked before anything is written
    paths = resolve_inputs(cfg, output_dir)
    spec = cfg.reward_spec
    policy, ref, critic, rm, tokenizer = _load_models(paths, cfg)
    try:
        budget = prompt_budget(context_length(policy), cfg.max_prompt_tokens, cfg.max_new_tokens)
    except ValueError as e:
        raise ValueError(f"ppo.max_new_tokens ({cfg.max_new_tokens}): {e}") from e
    train_prompts, test_prompts, test_rows, prompt_info = load_training_prompts(recipe, cfg, tokenizer, budget)
    if not train_prompts:
        raise ValueError(f"data {recipe.data.dataset!r}: no training prompts for PPO")
    reward_fn = spec.load(accelerator.device, cfg.eval_batch_size) if spec is not None else None
    logger.info("ppo config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    logger.info("ppo inputs: %s; %d training prompts (%s, %s), %d updates of %d episodes on %d process(es)", paths,
                len(train_prompts), prompt_info["source"], prompt_info["template"], cfg.num_updates, cfg.batch_size,
                accelerator.num_processes)
    if reward_fn is not None:
        scorer = FunctionScorer(reward_fn, spec.name)
        logger.info("reward: %s %s", spec.kind, spec.describe(reward_fn))
    else:
        rm.model.to(accelerator.device)
        scorer = RewardModelScorer(rm, tokenizer, normalise=cfg.normalise_reward)
        logger.info("reward model %s, normalisation %s", paths["reward"], rm.stats)

    gold_fn = None
    if str(recipe.data.dataset) == "embedded" and not prompt_only(recipe):  # the judge of the embedded dialogues
        from ..synthetic.gold import gold_score as gold_fn
    extra = {"gold": lambda ps, rs: [gold_fn(p, r) for p, r in zip(ps, rs)]} if gold_fn else {}

    with StageWriter(output_dir, name, resume=resume, main_process=accelerator.is_main_process) as writer:
        accelerator.wait_for_everyone()  # the partial dir (and its checkpoints) exists for every process
        # 2. train
        monitor = None
        if cfg.monitor_every:
            ref.to(accelerator.device)
            monitor = build_monitor(cfg, test_prompts, tokenizer, ref, rm, reward_fn, paths["reward"],
                                    accelerator.device, gold_fn, seed + 2)
        trainer = PPOTrainer(cfg, policy, ref, tokenizer, scorer, train_prompts, critic=critic, seed=seed,
                             accelerator=accelerator, checkpoint_dir=writer.checkpoints,
                             metrics_path=writer.path / "metrics.jsonl", extra_scorers=extra,
                             snapshot_dir=writer.path / SNAPSHOTS, monitor=monitor,
                             best_dir=writer.checkpoints / "monitor-best")
        t0 = time.time()
        history = trainer.train(resume=resume)
        train_s = time.time() - t0
        kept = "last"
        if cfg.monitor_keep_best:
            best_update = trainer.load_best()
            if best_update is not None:
                kept = f"update {best_update} (the judges' pick)"
                logger.info("ppo.monitor_keep_best: the stage's policy is the one after update %d", best_update)
        metrics: dict[str, Any] = {
            "updates": len(history), "episodes": len(history) * cfg.batch_size, "train_s": round(train_s, 2),
            "final": history[-1] if history else {},
            "gen_s": round(sum(r["gen_s"] for r in history), 2),
            "score_s": round(sum(r["score_s"] for r in history), 2),
            "optimise_s": round(sum(r["train_s"] for r in history), 2),
            "inputs": paths, "processes": accelerator.num_processes, "round": round_index,
            "prompts": prompt_info,
            "reward": spec.describe(reward_fn) if spec is not None else {"kind": "reward_model", "path": paths["reward"]},
        }
        if accelerator.is_main_process:
            # 3. before/after on held-out prompts
            if cfg.eval_prompts and test_prompts:
                prompts = test_prompts[: cfg.eval_prompts]
                if rm is not None:
                    rm.model.to(accelerator.device)
                cmp = compare_policies({"sft": ref, "ppo": trainer.policy}, ref, tokenizer, prompts, cfg,
                                       reward_model=rm, reward_fn=reward_fn, gold_fn=gold_fn, seed=seed + 1,
                                       batch_size=cfg.eval_batch_size)
                if test_rows:  # preference data: the dataset's chosen responses to the same prompts
                    chosen = {}
                    for row in test_rows:
                        chosen.setdefault(row["prompt"], row["chosen"])
                    cmp["chosen"] = score_dataset_responses(prompts, [chosen[p] for p in prompts], rm, gold_fn,
                                                            cfg.eval_batch_size)
                summary = summarise_comparison(cmp)
                _log_comparison(cmp, summary)
                metrics["comparison"] = {**cmp, "summary": summary}
            # 4. the policy, in Hugging Face format, and the list of its snapshots
            snapshots = write_snapshot_index(writer.path, cfg.batch_size)
            if monitor is not None:  # the monitor's verdict, table and pick (ppo/monitor.json)
                from ..rundir import write_json
                from .monitor import MONITOR_FILE

                report = monitor.report(len(history), cfg.num_updates, {r["update"]: r["path"] for r in snapshots},
                                        kept, trainer.stopped_at)
                write_json(writer.path / MONITOR_FILE, report)
                metrics["monitor"] = {k: report.get(k) for k in ("verdict", "first_warning", "judges_pick",
                                                                  "stopped_early_at", "policy_kept", "seconds",
                                                                  "overhead_per_update_s")}
                logger.info("monitor verdict: %s%s", report["verdict"],
                            f" (first at update {report['first_warning']['update']})" if report["first_warning"] else "")
            trainer.policy.save_pretrained(writer.path, safe_serialization=True)
            tokenizer.save_pretrained(writer.path)
            if trainer.model.critic is not None:  # the next feedback round's critic (ppo.continue_critic)
                trainer.model.critic.save_pretrained(writer.path / CRITIC, safe_serialization=True)
                tokenizer.save_pretrained(writer.path / CRITIC)
        writer.finish(metrics=metrics, config=stage_config(recipe, "ppo"))
    accelerator.wait_for_everyone()
    return writer.final
