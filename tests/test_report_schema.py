"""One schema for eval/report.json (evaluation/schema.py): what the evaluation writes fits it, what
tests/fake_run.py fabricates for the card, push and reproduce tests fits it, and it rejects a renamed,
missing or mistyped field by its path."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from fake_run import make_report, make_run


# ----------------------------------------------------------------------------- the real writer


@pytest.fixture(scope="module")
def real_run(micro_run, tmp_path_factory):
    """The micro run with the real PPO stage trained on it and then evaluated (every section the writer
    can write on the embedded data: gold, gold win rates, the curve, training.ppo from metrics.jsonl)."""
    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main as ppo

    run = tmp_path_factory.mktemp("schema") / "run"
    for stage in ("base", "sft", "reward"):
        shutil.copytree(micro_run / stage, run / stage)
    recipe = load_recipe("micro", {"eval.n_prompts": "4", "eval.bootstrap_samples": "20", "eval.device": "cpu"})
    ppo(recipe, run)
    out = evaluate(recipe, run)
    return run, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_the_evaluation_writes_a_report_that_fits_the_schema(real_run):
    from gpt2_rlhf.evaluation.schema import validate_report

    _, report = real_run
    validate_report(report)
    # the optional sections the validation covered
    assert {"gold_win_rates", "overoptimisation"} <= set(report) and "gold" in report["metrics"]
    assert {"first", "last", "updates"} <= set(report["training"]["ppo"])


@pytest.mark.slow
def test_the_ppo_plot_reads_the_trainers_own_rows(real_run):
    """Every curve the training plot draws is a key the trainer writes, against the row's own `update`."""
    from gpt2_rlhf.evaluation.plots import PPO_CURVES, ppo_curves

    run, report = real_run
    rows = [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    curves = ppo_curves(rows)
    assert list(curves) == list(PPO_CURVES)
    assert all([x for x, _ in pts] == [r["update"] for r in rows] for pts in curves.values())
    assert report["plots"]["ppo_training"] == "plots/ppo_training.png"
    assert report["training"]["ppo"]["first"] == {k: v for k, v in rows[0].items() if isinstance(v, (int, float))}
    with pytest.raises(ValueError, match="row 2 has no 'update'"):
        ppo_curves([rows[0], {k: v for k, v in rows[1].items() if k != "update"}])


# ----------------------------------------------------------------------------- the fabricated reports


@pytest.mark.parametrize("kw", [
    {}, {"seed": 3}, {"seed": 4}, {"gold": False},  # what the card, push and reproduce tests use
    {"models": ("sft", "ppo")}, {"models": ("base", "sft")}, {"models": ("ppo",)}, {"n": 1},
])
def test_fake_reports_fit_the_schema(kw):
    from gpt2_rlhf.evaluation.schema import validate_report

    validate_report(make_report(**kw))


@pytest.mark.parametrize("gold", [True, False])
def test_the_fake_runs_written_report_fits_the_schema(tmp_path, gold):
    from gpt2_rlhf.evaluation.schema import validate_report

    run = make_run(tmp_path / "run", seed=1, gold=gold)
    report = json.loads((run / "eval" / "report.json").read_text())
    validate_report(report)
    rows = [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert report["training"]["ppo"]["updates"] == len(rows) and report["training"]["ppo"]["last"] == rows[-1]


# ----------------------------------------------------------------------------- the schema has teeth


def _rename(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


MUTATIONS = {  # what a writer or fixture could get wrong -> the path the error must name
    "V key renamed": (lambda r: _rename(r["metrics"]["gold"]["ppo"], "ci_low", "ci_lo"), "metrics.gold.ppo.ci_low"),
    "V n missing": (lambda r: r["metrics"]["reward"]["sft"].pop("n"), "metrics.reward.sft.n"),
    "V value null": (lambda r: r["metrics"]["reward"]["ppo"].update(value=None), "metrics.reward.ppo.value"),
    "V value NaN": (lambda r: r["metrics"]["reward"]["ppo"].update(value=float("nan")), "metrics.reward.ppo.value"),
    "metric renamed": (lambda r: _rename(r["metrics"], "gold", "gold_score"), "metrics.gold_score"),
    "required metric missing": (lambda r: r["metrics"].pop("reward"), "metrics.reward"),
    "model key unknown": (lambda r: _rename(r["metrics"]["reward"], "ppo", "rlhf"), "metrics.reward.rlhf"),
    "metric of a model not evaluated": (lambda r: r["models"].pop("base"), "metrics.reward.base"),
    "win rate key missing": (lambda r: r["win_rates"]["ppo_vs_sft"].pop("win_rate_ties_half"),
                             "win_rates.ppo_vs_sft.win_rate_ties_half"),
    "win rate pair renamed": (lambda r: _rename(r["gold_win_rates"], "ppo_vs_sft", "rlhf_vs_sft"),
                              "gold_win_rates.rlhf_vs_sft"),
    "optional section renamed": (lambda r: _rename(r, "gold_win_rates", "gold_winrates"), "gold_winrates"),
    "finding id unknown": (lambda r: r["findings"][1].update(id="ppo_wins"), "findings[1].id"),
    "finding good not bool": (lambda r: r["findings"][0].update(good="yes"), "findings[0].good"),
    "finding text missing": (lambda r: r["findings"][2].pop("text"), "findings[2].text"),
    "rm accuracy alone": (lambda r: r["reward_model"].pop("length_baseline_accuracy"),
                          "reward_model.length_baseline_accuracy"),
    "on_policy accuracy missing": (lambda r: r["reward_model"]["on_policy"].pop("accuracy"),
                                   "reward_model.on_policy.accuracy"),
    "stats renamed": (lambda r: _rename(r["reward_model"]["stats"], "std", "sd"), "reward_model.stats.std"),
    "ppo row without update": (lambda r: r["training"]["ppo"]["first"].pop("update"), "training.ppo.first.update"),
    "ppo row with a non-number": (lambda r: r["training"]["ppo"]["last"].update(score="high"),
                                  "training.ppo.last.score"),
    "curve point kl not a V": (lambda r: r["overoptimisation"]["points"][1].update(kl=1.5),
                               "overoptimisation.points[1].kl"),
    "curve peak out of range": (lambda r: r["overoptimisation"]["gold_peak"].update(index=99),
                                "overoptimisation.gold_peak.index"),
    "null placeholder for an optional part": (lambda r: r.update(classifier=None), "classifier"),
    "decoding field missing": (lambda r: r["decoding"].pop("samples_per_prompt"), "decoding.samples_per_prompt"),
    "dataset count a string": (lambda r: r["dataset"].update(n_prompts="24"), "dataset.n_prompts"),
    "plot unknown": (lambda r: r["plots"].update(histogram="plots/h.png"), "plots.histogram"),
    "schema version": (lambda r: r.update(schema_version=2), "schema_version"),
    "a bool for a count": (lambda r: r["win_rates"]["ppo_vs_sft"].update(n=True), "win_rates.ppo_vs_sft.n"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_schema_names_the_first_bad_field(name):
    from gpt2_rlhf.evaluation.schema import validate_report

    mutate, path = MUTATIONS[name]
    report = copy.deepcopy(make_report())
    mutate(report)
    with pytest.raises(ValueError) as e:
        validate_report(report)
    message = str(e.value)
    assert message.startswith(f"report.json: {path}: ") and "\n" not in message, message


def test_the_validator_refuses_a_keyword_it_does_not_implement():
    """A schema keyword the small validator does not know would be ignored silently: it fails instead."""
    from gpt2_rlhf.evaluation.schema import REPORT_SCHEMA, check

    with pytest.raises(TypeError, match="unsupported keywords \\['maxLength'\\]"):
        check("x", {"type": "string", "maxLength": 3}, REPORT_SCHEMA)
    check("x", {"type": "string", "minLength": 1}, REPORT_SCHEMA)
