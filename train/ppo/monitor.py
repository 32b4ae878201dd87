"""A reward-hacking early warning that needs no gold judge: PPO's proxy against judges it never sees.

Every ``monitor_every`` updates (and before the first) the policy answers a fixed set of
held-out prompts with fixed sampler seeds (the project's one sampler,
``train.sampling.measure_policy``), and the monitor records, per point:

* ``proxy``: the reward PPO optimises (the reward model's normalised score, or the reward
  function), mean over the prompts, with its bootstrap standard error;
* ``judge``: the judges' normalised scores (reward models PPO never saw:
  ``reward/judges/<name>/``, trained on held-out pairs and/or with other seeds; each
  normalised on the proxy's SFT samples, so 0 is SFT's level for every one of them) combined
  per response by ``monitor_aggregate`` (the minimum by default: Coste et al. 2023's worst
  case), then averaged; each judge's own mean, and ``disagreement``, the ensemble's mean per-response standard
  deviation (Coste et al. 2023, "Reward model ensembles help mitigate overoptimization";
  Eisenstein et al. 2023, "Helping or herding? Reward model ensembles mitigate but do not
  eliminate reward hacking");
* ``kl`` (mean summed k1 to the reference per response), ``length`` (tokens, EOS included),
  ``distinct_1`` and ``distinct_2`` (Li et al. 2016), and ``gold`` when the data has a gold
  judge (the embedded world: recorded for validation, never used by the detection).

The warning (``warnings``, pure): at point t let b be the judges' best point so far. The
proxy "pulls away from the judges" when the judges have set no new best for
``monitor_patience`` points (t - b >= patience) and the proxy's change since b minus the
judges' change since b (the divergence: how far the proxy rose plus how far the judges fell),
each in units of its own spread over the prompts at the first point (a reward function's
scale is its own, and a reward model's need not be normalised), exceeds ``monitor_z``
paired-bootstrap standard errors of that difference over the fixed prompts (the noise band:
the same prompts and seeds at every point, so the difference's own resampling is the right
yardstick). Over-optimisation looks like this in Gao et al.
2022 ("Scaling laws for reward model overoptimization"): the proxy climbs on, or holds,
while the true reward turns; the judges stand in for the true reward. A policy that gets
worse by both (the proxy falls with the judges) is not a divergence.

Uses the same fixed prompts and seeds at every point, so successive points differ by the
policy only (common random numbers). The judges' pick (``best_index``, ``judges_pick``) is,
among the points up to the first warning, the earliest of the judges' successive bests within
``monitor_pick_se`` paired-bootstrap standard errors of the best (the one-standard-error rule;
0: the best point); ``monitor_keep_best`` makes it the stage's policy, and
``monitor_early_stop`` ends training at the first warning.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import torch

logger = logging.getLogger(__name__)

MONITOR_FILE = "monitor.json"
ROW_PREFIX = "monitor_"  # the monitor's columns in metrics.jsonl rows

# ----------------------------------------------------------------------------- maths (pure, unit-tested)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams of the responses (Li et al. 2016); 0 when there are none."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = t.split()
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bootstrap_se(values: torch.Tensor, samples: int, seed: int) -> float:
    """(P,) per-prompt values -> the standard deviation of the mean over `samples` resamplings of the prompts."""
    P = values.shape[0]
    if P < 2 or samples < 2:
        return 0.0
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, P, (samples, P), generator=g)  # (S, P)
    return values.double()[idx].mean(1).std().item()


def ensemble_disagreement(scores: torch.Tensor) -> float:
    """(J, P) normalised scores of J judges -> mean over responses of the judges' (unbiased) std; 0 for J < 2."""
    if scores.shape[0] < 2:
        return 0.0
    return scores.double().std(0).mean().item()


def warnings(proxy: torch.Tensor, judge: torch.Tensor, patience: int, z: float, samples: int = 1000,
             seed: int = 0) -> list[dict[str, Any]]:
    """The warning test at every point: per-prompt (T, P) proxy and judge scores -> one dict per point
    (`warning_check` at t = 0 .. T-1)."""
    return [warning_check(proxy, judge, t, patience, z, samples, seed) for t in range(proxy.shape[0])]


def warning_check(proxy: torch.Tensor, judge: torch.Tensor, t: int, patience: int, z: float, samples: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """The warning test at point t over per-prompt (T, P) proxy and judge scores (points after t unused).

    b = argmax of the judge means over points 0..t (the earliest on a tie); per prompt
    d = (proxy[t] - proxy[b]) / s_proxy - (judge[t] - judge[b]) / s_judge, where s is each score's
    standard deviation over the prompts at point 0 (`spread`); ``fired`` when t - b >= patience and
    mean(d) > z * (bootstrap se of that mean over the prompts). The dict: best (b), proxy_rise
    (proxy mean at t minus at b) and judge_drop (judge mean at b minus at t), in their own units;
    divergence (mean(d)) and band (z * se), in spreads; and fired.
    """
    proxy, judge = proxy.double(), judge.double()
    jm = judge[: t + 1].mean(1)  # (t+1,)
    b = int(torch.argmax(jm))  # argmax returns the first maximum
    d = (proxy[t] - proxy[b]) / spread(proxy[0]) - (judge[t] - judge[b]) / spread(judge[0])  # (P,) paired
    band = z * bootstrap_se(d, samples, seed + t)
    rise, drop = (proxy[t].mean() - proxy[b].mean()).item(), (jm[b] - jm[t]).item()
    divergence = d.mean().item()
    return {"best": b, "proxy_rise": rise, "judge_drop": drop, "divergence": divergence, "band": band,
            "fired": fires(t, b, divergence, band, patience)}


def spread(values: torch.Tensor) -> float:
    """(P,) per-prompt scores -> their (unbiased) standard deviation, 1 when there is none (one prompt, or
    every prompt alike): the unit of a score's changes in the divergence."""
    s = values.double().std().item() if values.numel() > 1 else 0.0
    return s if s > 1e-12 else 1.0


def fires(t: int, best: int, divergence: float, band: float, patience: int) -> bool:
    """The warning rule at point t: the judges' best (point `best`) is `patience` points old and the
    proxy pulled away from the judges since then (its rise plus their fall) by more than the noise band."""
    return bool(t - best >= patience and divergence > band)


def records(means: Sequence[float]) -> list[int]:
    """The points that set a new judges' best when they were measured (point 0 always; ties are not new)."""
    out: list[int] = []
    for i, m in enumerate(means):
        if not out or m > means[out[-1]]:
            out.append(i)
    return out


def judges_pick(judge: torch.Tensor, warned: int | None, se_rule: float = 0.0, samples: int = 1000,
                seed: int = 0) -> int:
    """(T, P) per-prompt judge scores -> the judges' pick among the points up to the first warning (`warned`,
    None: all of them).

    The best point b (the highest judge mean, the earliest on a tie), or with se_rule > 0 the earliest of
    the judges' successive bests (`records`) whose mean is within se_rule paired-bootstrap standard errors
    of b's: the one-standard-error rule (Breiman et al. 1984, "Classification and Regression Trees"), the
    simplest model within noise of the best, here the point nearest the starting policy. A later point
    has to beat an earlier one by more than the noise of the fixed prompts to be preferred to it."""
    upto = judge.double()[: None if warned is None else warned + 1]  # (T', P)
    kept = records(upto.mean(1).tolist())
    best = kept[-1]
    if se_rule <= 0:
        return best
    for r in kept:
        gap = upto[best] - upto[r]  # (P,) paired over the fixed prompts
        if gap.mean().item() <= se_rule * bootstrap_se(gap, samples, seed):
            return r
    return best


def combine_judges(scores: torch.Tensor, how: str) -> torch.Tensor:
    """(J, N) normalised judge scores -> (N,) per response: their minimum (the worst case, Coste et al. 2023)
    or their mean (ppo.monitor_aggregate, eval.judge_aggregate)."""
    if how == "min":
        return scores.min(0).values
    if how == "mean":
        return scores.mean(0)
    raise ValueError(f"judge aggregate must be min or mean, got {how!r}")


def first_warning(checks: Sequence[dict[str, Any]]) -> int | None:
    """Index of the first point whose warning fired, or None."""
    return next((i for i, c in enumerate(checks) if c["fired"]), None)


# ----------------------------------------------------------------------------- the monitor


class Monitor:
    """Measures a policy on the fixed held-out prompts; keeps the points; decides the warnings.

    proxy: f(prompts, responses) -> (N,) the reward PPO optimises, as PPO sees it (normalised);
    judges: name -> f(prompts, responses) -> (N,) normalised judge scores (may be empty: then no warning);
    gold: f(prompt, response) -> float (validation only, never used by the decision).
    """

    def __init__(self, cfg, prompts: Sequence[str], tokenizer, reference,
                 proxy: Callable[[list[str], list[str]], torch.Tensor],
                 judges: dict[str, Callable[[list[str], list[str]], torch.Tensor]],
                 gold: Callable[[str, str], float] | None = None, seed: int = 0):
        if not prompts:
            raise ValueError("ppo.monitor_every needs held-out prompts (the test split is empty)")
        self.cfg = cfg
        self.prompts = list(prompts)
        self.k = cfg.monitor_samples_per_prompt
        self.tokenizer = tokenizer
        self.reference = reference
        self.proxy = proxy
        self.judges = dict(judges)
        self.gold = gold
        self.seed = seed
        self.points: list[dict[str, Any]] = []
        self.seconds = 0.0

    # -- state (checkpointed with the trainer, plain containers only)
    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = list(state["points"])
        self.seconds = float(state["seconds"])

    def per_prompt(self, values: Sequence[float]) -> list[float]:
        """k samples per prompt (prompt-major repeats) -> the mean per prompt."""
        v = torch.tensor([float(x) for x in values], dtype=torch.double).view(len(self.prompts), self.k)
        return v.mean(1).tolist()

    @torch.no_grad()
    def measure(self, policy, update: int) -> dict[str, Any]:
        """One point: the policy on the fixed prompts with the fixed seeds; appended to self.points."""
        from ..sampling import measure_policy

        cfg = self.cfg
        t0 = time.perf_counter()
        prompts = [p for p in self.prompts for _ in range(self.k)]
        m = measure_policy(policy, self.tokenizer, prompts, cfg.generation, self.seed, cfg.eval_batch_size,
                           cfg.max_prompt_tokens, reference=self.reference, desc=f"monitor @ {update}")
        proxy = self.per_prompt(self.proxy(prompts, m.texts).tolist())
        # (J, N): every judge on every response; the disagreement is the ensemble's spread per response
        per_response = {name: fn(prompts, m.texts).double().cpu() for name, fn in self.judges.items()}
        point: dict[str, Any] = {
            "update": update,
            "proxy": sum(proxy) / len(proxy),
            "proxy_se": bootstrap_se(torch.tensor(proxy), cfg.monitor_bootstrap, self.seed),
            "kl": sum(m.kl()) / len(prompts),
            "length": sum(n + e for n, e in zip(m.lengths, m.eos)) / len(prompts),
            "distinct_1": distinct_n(m.texts, 1), "distinct_2": distinct_n(m.texts, 2),
            "per_prompt": {"proxy": proxy},
        }
        if per_response:
            scores = torch.stack(list(per_response.values()))  # (J, N)
            judge = torch.tensor(self.per_prompt(combine_judges(scores, cfg.monitor_aggregate).tolist()))
            point.update(judge=judge.mean().item(),
                         judge_se=bootstrap_se(judge, cfg.monitor_bootstrap, self.seed),
                         judges={name: v.mean().item() for name, v in per_response.items()},
                         disagreement=ensemble_disagreement(torch.stack(list(per_response.values()))))
            point["per_prompt"]["judge"] = judge.tolist()
        if self.gold is not None:
            point["gold"] = sum(float(self.gold(p, r)) for p, r in zip(prompts, m.texts)) / len(prompts)
        point["seconds"] = time.perf_counter() - t0
        self.seconds += point["seconds"]
        self.points.append(point)
        self.decide()
        logger.info("monitor @ update %d: %s", update, format_point(point))
        if point.get("warning"):
            logger.warning("reward-hacking warning at update %d: %s", update, point["warning"])
        return point

    def decide(self) -> None:
        """The warning test at the newest point (over the points so far); annotates it."""
        if not self.judges:
            return
        # float64, as recorded in monitor.json: a replay from the file gives the same checks
        proxy = torch.tensor([p["per_prompt"]["proxy"] for p in self.points], dtype=torch.double)
        judge = torch.tensor([p["per_prompt"]["judge"] for p in self.points], dtype=torch.double)
        check = warning_check(proxy, judge, len(self.points) - 1, self.cfg.monitor_patience, self.cfg.monitor_z,
                              self.cfg.monitor_bootstrap, self.seed)
        point = self.points[-1]
        point["check"] = check
        if check["fired"]:
            b = self.points[check["best"]]
            point["warning"] = (f"the proxy pulled {check['divergence']:.3f} spreads away from the judges (noise band "
                                f"{check['band']:.3f}) since update {b['update']}, the judges' best: the proxy "
                                f"changed {check['proxy_rise']:+.3f}, the judges {-check['judge_drop']:+.3f}, and they "
                                f"set no new best for {len(self.points) - 1 - check['best']} points")

    # -- what the trainer and the stage read
    def best_index(self) -> int | None:
        """The judges' pick: the point with the highest judge score (the earliest on a tie) up to the first
        warning; None without judges.

        Points after a warning are not candidates: by then PPO has found what the proxy misses, and judges
        trained on the same kind of data are next (Eisenstein et al. 2023: ensembles mitigate, not eliminate,
        reward hacking); in benchmarks/monitor.py a judge rose again late while gold kept falling."""
        if not self.judges or not self.points:
            return None
        warned = first_warning([p.get("check", {"fired": False}) for p in self.points])
        judge = torch.tensor([p["per_prompt"]["judge"] for p in self.points], dtype=torch.double)
        return judges_pick(judge, warned, self.cfg.monitor_pick_se, self.cfg.monitor_bootstrap, self.seed)

    def is_candidate(self) -> bool:
        """Whether the newest point can be the judges' pick (`judges_pick`): it set a new judges' best and no
        warning came before it (monitor_keep_best keeps its policy)."""
        if not self.judges or not self.points:
            return False
        before = [p.get("check", {"fired": False}) for p in self.points[:-1]]
        return first_warning(before) is None and records([p["judge"] for p in self.points])[-1] == len(self.points) - 1

    def fired(self) -> bool:
        return bool(self.points and self.points[-1].get("check", {}).get("fired"))

    def row(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point's columns for its metrics.jsonl row (numbers, plus the warning text when it fired)."""
        keys = ("proxy", "proxy_se", "judge", "judge_se", "disagreement", "kl", "length", "distinct_1",
                "distinct_2", "gold", "seconds")
        out = {ROW_PREFIX + k: round(float(point[k]), 6) for k in keys if k in point}
        if "check" in point:
            out[ROW_PREFIX + "warning"] = int(point["check"]["fired"])
        if point.get("warning"):
            out[ROW_PREFIX + "message"] = point["warning"]
        return out

    def report(self, updates_done: int, planned: int, snapshots: dict[int, str], kept: str,
               stopped_at: int | None) -> dict[str, Any]:
        """ppo/monitor.json: the settings, the verdict, the per-point table and the judges' pick."""
        cfg = self.cfg
        # every point with its per-prompt proxy and judge means: the warning test can be replayed exactly
        table = [dict(p) for p in self.points]
        fired = [i for i, p in enumerate(self.points) if p.get("check", {}).get("fired")]
        best = self.best_index()
        measured = [p for p in self.points if p["update"] > 0]
        out: dict[str, Any] = {
            "settings": {"every": cfg.monitor_every, "prompts": len(self.prompts),
                         "samples_per_prompt": self.k, "patience": cfg.monitor_patience, "z": cfg.monitor_z,
                         "bootstrap": cfg.monitor_bootstrap, "seed": self.seed, "judges": sorted(self.judges),
                         "aggregate": cfg.monitor_aggregate, "pick_se": cfg.monitor_pick_se,
                         "keep_best": cfg.monitor_keep_best, "early_stop": cfg.monitor_early_stop},
            "verdict": ("no judges" if not self.judges else "warning" if fired else "no warning"),
            "first_warning": None, "warnings": len(fired),
            "updates_done": updates_done, "updates_planned": planned, "stopped_early_at": stopped_at,
            "points": table,
            "seconds": round(self.seconds, 3),
            "seconds_per_point": round(self.seconds / len(self.points), 3) if self.points else None,
            "overhead_per_update_s": round(self.seconds / updates_done, 3) if updates_done else None,
            "policy_kept": kept,
        }
        if fired:
            i = fired[0]
            out["first_warning"] = {"update": self.points[i]["update"], "point": i, "message": self.points[i]["warning"]}
        if best is not None:
            u = self.points[best]["update"]
            out["judges_pick"] = {"update": u, "point": best, "judge": self.points[best]["judge"],
                                  "proxy": self.points[best]["proxy"],
                                  "path": "." if u == updates_done else snapshots.get(u),
                                  "initial_policy": u == 0}
        if measured and "gold" in measured[0]:
            out["gold_available"] = True
        return out


def format_point(p: dict[str, Any]) -> str:
    parts = [f"proxy {p['proxy']:+.3f}±{p['proxy_se']:.3f}"]
    if "judge" in p:
        parts.append(f"judge {p['judge']:+.3f}±{p['judge_se']:.3f} (disagreement {p['disagreement']:.3f})")
    parts.append(f"kl {p['kl']:.2f} len {p['length']:.1f} distinct-1/2 {p['distinct_1']:.2f}/{p['distinct_2']:.2f}")
    if "gold" in p:
        parts.append(f"gold {p['gold']:.3f}")
    return " | ".join(parts)
