"""`rlhf card`: every number on a card comes from the run's files; the metadata parses on the Hub's terms."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from gpt2_rlhf.model_card.context import headline_values, value_cell
from gpt2_rlhf.model_card.markdown import ci_decimals, code_block, fmt, fmt_at, fmt_count, numbers_in
from gpt2_rlhf.model_card.options import CardOptions
from gpt2_rlhf.model_card.render import render_card, render_texts
from gpt2_rlhf.model_card.sources import CardSources
from tests.fake_run import all_numbers, all_strings, make_run
from gpt2_rlhf.cli import main

CARDS = ("README.md", "reward/README.md", "sft/README.md")


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


def render(run: Path, **opts) -> dict[str, str]:
    return render_texts(CardSources.from_run_dir(run), CardOptions(**opts))


# ----------------------------------------------------------------------------- helpers, hand-computed


def test_fmt_count_writes_model_sizes_as_people_do():
    assert [fmt_count(n) for n in (999, 1000, 1_113_856, 124_439_808, 354_823_168, 1_557_611_200)] == [
        "999", "1K", "1.11M", "124M", "355M", "1.56B"]


def test_fmt_prints_four_significant_digits():
    assert fmt(0.53382416) == "0.5338"
    assert fmt(-18.5615) == "-18.56"
    assert fmt(82.43196) == "82.43"
    assert fmt(1234.56) == "1235"
    assert fmt(5e-05) == "5e-05"
    assert fmt(0.0) == "0" and fmt(3) == "3" and fmt(True) == "yes"


def test_numbers_in_skips_names_and_links():
    text = ("GPT-2 and gpt2 score -0.5 [1.2, 3] on distinct_1 (n=64), lr 5e-05, sha256:ab12, torch 2.13.0; "
            "see [x](https://arxiv.org/abs/2203.02155) and ![p](eval/plots/p2.png).")
    assert numbers_in(text) == ["-0.5", "1.2", "3", "64", "5e-05", "2.13.0"]


def test_code_block_cannot_be_closed_by_its_text():
    block = code_block("a ``` b")
    assert block.startswith("````text\n") and block.endswith("\n````")


# ----------------------------------------------------------------------------- the card


def allowed_numbers(run: Path) -> set[str]:
    """Every number the card may print: values of the report, samples, configs and recipe (formatted the
    card's way or as written), numbers inside their strings, and numbers in the config classes' help
    texts (documentation of the code, shown in the hyperparameter tables). A value with an interval is
    printed at the interval's precision (0 to 6 decimals), so each number is allowed at each of those."""
    from gpt2_rlhf.train.config import section_class

    sources = [json.loads((run / "eval/report.json").read_text()),
               [json.loads(line) for line in (run / "eval/samples.jsonl").read_text().splitlines()],
               yaml.safe_load((run / "recipe.yaml").read_text())]
    sources += [yaml.safe_load((run / s / "config.yaml").read_text()) for s in ("base", "sft", "reward", "ppo", "eval")]
    allowed: set[str] = set()
    for src in sources:
        for x in all_numbers(src):
            allowed |= {fmt(x), str(x), repr(x), *(fmt_at(x, d) for d in range(7))}
        for s in all_strings(src):
            allowed |= set(numbers_in(s))
    for stage in ("sft", "reward", "ppo"):
        for f in dataclasses.fields(section_class(stage)):
            allowed |= set(numbers_in(f.metadata.get("help", "")))
    return allowed


def test_every_number_on_every_card_comes_from_the_run(run):
    render_card(run, repo_id="alice/gpt2-rlhf-tiny")
    allowed = allowed_numbers(run)
    for rel in CARDS:
        text = (run / "card" / rel).read_text()
        stray = [n for n in numbers_in(text) if n not in allowed]
        assert not stray, f"{rel}: numbers not from the report or configs: {stray}"
        assert len(numbers_in(text)) > 10


def test_the_templates_contain_no_number():
    templates = Path("model_card/templates")
    for template in [*templates.glob("*.md"), *templates.glob("*.jinja")]:
        assert numbers_in(template.read_text()) == [], template


def test_card_numbers_follow_the_report(run):
    """The same run with other numbers renders other numbers: nothing is stuck in the template."""
    before = render(run)["README.md"]
    report = json.loads((run / "eval/report.json").read_text())
    report["metrics"]["reward"]["ppo"].update(value=0.7777777, ci_low=0.7034567, ci_high=0.8534567)
    report["win_rates"]["ppo_vs_sft"].update(win=0.6666666, ci_low=0.6564321, ci_high=0.6764321)
    (run / "eval/report.json").write_text(json.dumps(report))
    after = render(run)["README.md"]
    # at their intervals' precision: half-widths 0.075 and 0.01 -> three decimals
    assert "0.778 [0.703, 0.853]" in after and "0.667 [0.656, 0.676]" in after
    assert "0.778 [0.703, 0.853]" not in before and "0.667 [0.656, 0.676]" not in before


def test_card_parses_with_model_index_for_each_headline_metric(run):
    path = render_card(run, repo_id="alice/gpt2-rlhf-tiny")
    card = ModelCard.load(path)
    data = card.data
    assert data.license == "mit" and data.language == ["en"] and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert {"rlhf", "ppo", "gpt2"} <= set(data.tags)
    report = json.loads((run / "eval/report.json").read_text())
    headlines = headline_values(report)
    assert {h[0] for h in headlines} == {"reward", "gold", "win_rate", "reward_improvement_sd", "kl_to_reference",
                                         "perplexity", "distinct_2"}
    results = {(r.metric_type, r.metric_name): r for r in data.eval_results}
    assert len(results) == len(headlines)
    for mtype, name, path_, value in headlines:
        r = results[(mtype, name)]
        assert type(r.metric_value) is float and r.metric_value == value
        assert r.task_type == "text-generation" and r.dataset_split == "test"
    # plain YAML: no Python or numpy tags a Hub parser would reject
    front = path.read_text().split("---")[1]
    assert "!!" not in front and yaml.safe_load(front)["model-index"][0]["name"] == "alice/gpt2-rlhf-tiny"
    # the real data set is a Hub id in `datasets`; the embedded one is not
    assert data.datasets is None


def test_hub_dataset_and_base_model_in_metadata(tmp_path):
    run = make_run(tmp_path / "hh", gold=False)
    cfg = yaml.safe_load((run / "base/config.yaml").read_text())
    cfg["base"]["model"] = "gpt2"
    (run / "base/config.yaml").write_text(yaml.safe_dump(cfg))
    data = ModelCard(render(run)["README.md"]).data
    assert data.datasets == ["Anthropic/hh-rlhf"] and data.base_model == "gpt2"
    assert all(r.dataset_config == "helpful-base" for r in data.eval_results)
    assert "gold" not in {r.metric_type for r in data.eval_results}


def test_sections_show_what_was_measured_and_used(run):
    text = render(run, examples=2)["README.md"]
    assert "| `kl_coef` | 0.1 |" in text and "| `learning_rate` | 5e-05 |" in text  # configs actually used
    assert "### Win rates" in text and "### Reward model accuracy" in text and "baseline: the longer response" in text
    assert "| rouge rougeL |" in text  # eval.reference_metrics
    assert "![Reward distribution per model](eval/plots/reward_distribution.png)" in text
    assert "| `score` | -0.42 | 0.917 |" in text  # PPO first vs last update (the trainer's row keys)
    samples = [json.loads(line) for line in (run / "eval/samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"].strip() in text and samples[1]["prompt"].strip() in text
    assert samples[2]["prompt"].strip() not in text  # exactly the first N, in order
    assert text.index(samples[0]["prompt"].strip()) < text.index(samples[1]["prompt"].strip())
    assert "pip install gpt2-rlhf==0.1.0" in text and "| torch | 2.13.0+cpu |" in text
    assert "rlhf reproduce" in text and "@misc{" in text


def test_new_measurements_are_on_the_policy_card(run):
    """The chosen reference row, gold win rates, on-policy reward-model accuracy and the overoptimisation curve."""
    report = json.loads((run / "eval/report.json").read_text())
    text = render(run)["README.md"]
    m = report["metrics"]
    section = text[text.index("### Reference: the dataset's chosen responses"):]
    assert f"| Reward (normalised RM score) | {value_cell(m['reward']['chosen'])} |" in section
    assert f"| Gold judge score | {value_cell(m['gold']['chosen'])} |" in section
    assert "Dataset's chosen responses" not in text[:text.index("### Reference: the dataset")]  # not a model column
    gold_wins = text[text.index("### Win rates (gold judge)"):]
    w = report["gold_win_rates"]["ppo_vs_sft"]
    d = ci_decimals(w["ci_low"], w["ci_high"])  # win, tie and loss at the win rate's interval's precision
    assert f"| PPO (RLHF) vs SFT | {fmt_at(w['win'], d)} | {fmt_at(w['tie'], d)} | {fmt_at(w['loss'], d)} |" in gold_wins
    op = report["reward_model"]["on_policy"]
    assert "held-out pairs of policy samples" in text and f"| {fmt(op['accuracy'])} |" in text
    assert f"| baseline: the longer response wins | {fmt(report['reward_model']['length_baseline_accuracy'])} | " \
           f"{fmt(op['length_baseline_accuracy'])} |" in text
    assert "not measured on policy samples" not in text
    curve = text[text.index("### Overoptimisation curve"):]
    for p in report["overoptimisation"]["points"]:
        assert f"| {p['label']}" in curve and value_cell(p["reward"]) in curve and value_cell(p["gold"]) in curve
    peak = report["overoptimisation"]["gold_peak"]["label"]
    assert f"| {peak} (gold peak) |" in curve
    assert "![Overoptimisation curve" in text and "eval/plots/overoptimisation.png" in text
    assert "Gao et al. found" in text


def test_feedback_rounds_are_on_the_policy_card(run):
    """training.feedback.rounds (the label stages' provenance and each round's RM/PPO numbers) becomes a table."""
    path = run / "eval/report.json"
    report = json.loads(path.read_text())
    assert "### Feedback on the policy's own samples" not in render(run)["README.md"]  # no feedback: no section
    rounds = [{"round": r, "policy": pol, "labeller": "gold", "comparisons": c, "flipped": fl, "test_comparisons": t,
               "noise": {"temperature": 0.0, "flip_rate": fr, "min_gap": 0.1},
               "reward": {"accuracy": a, "on_policy": {"accuracy": op}}, "ppo": {"episodes": 1024, "final_kl": kl}}
              for r, pol, c, fl, t, fr, a, op, kl in ((1, "sft", 1999, 401, 265, 0.2, 0.9225, 0.6679, 2.679),
                                                      (2, "ppo_round1", 2000, 388, 168, 0.2, 0.94, 0.875, 3.6))]
    report["training"]["feedback"] = {"rounds": rounds}
    path.write_text(json.dumps(report))
    text = render(run)["README.md"]
    start = text.index("### Feedback on the policy's own samples")
    section = text[start:text.index("\n## ", start)]
    assert "| 1 | `sft` | gold, flip rate 0.2 | 1999 (401) | 265 | 0.9225 | 0.6679 | 1024 | 2.679 |" in section
    assert "| 2 | `ppo_round1` | gold, flip rate 0.2 | 2000 (388) | 168 | 0.94 | 0.875 | 1024 | 3.6 |" in section
    assert "2 feedback rounds" in section


def test_missing_optional_values_drop_their_sections(run):
    report = json.loads((run / "eval/report.json").read_text())
    for key in ("win_rates", "gold_win_rates", "reward_improvement", "findings", "plots", "training",
                "reference_metrics", "overoptimisation"):
        del report[key]
    del report["metrics"]["gold"]
    del report["metrics"]["reward"]["chosen"]
    for m in report["metrics"].values():
        for v in m.values():
            v["ci_low"] = v["ci_high"] = None
    report["reward_model"] = {k: v for k, v in report["reward_model"].items() if "accuracy" not in k and k != "on_policy"}
    del report["metrics"]["eos_rate"]["base"]
    (run / "eval/report.json").write_text(json.dumps(report))
    for rel, text in render(run).items():
        assert "None" not in text and "nan" not in text.lower(), rel
        assert not re.search(r"\|[ \t]*\|", text), f"{rel}: empty table cell"
        assert "[More Information Needed]" not in text
    text = render(run)["README.md"]
    for gone in ("### Win rates", "### Reward improvement", "### Reference-based metrics", "### Findings", "### Plots", "Gold judge", "first update",
                 "### Reward model accuracy", "` |  |", "### Overoptimisation", "### Reference: the dataset"):
        assert gone not in text, gone
    assert "| EOS rate | not measured |" in text
    assert "gold" not in {r.metric_type for r in ModelCard(text).data.eval_results}


def test_reward_model_card(run):
    render_card(run, repo_id="alice/tiny")
    card = ModelCard.load(run / "card/reward/README.md")
    report = json.loads((run / "eval/report.json").read_text())
    rm = report["reward_model"]
    assert card.data.pipeline_tag == "text-classification" and "reward-model" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "accuracy": rm["accuracy"], "mean_margin": rm["mean_margin"]}
    text = card.text
    for value in (rm["accuracy"], rm["length_baseline_accuracy"], rm["untrained_accuracy"], rm["stats"]["mean"],
                  rm["stats"]["std"], rm["on_policy"]["accuracy"], rm["on_policy"]["length_baseline_accuracy"],
                  rm["on_policy"]["initial_accuracy"], rm["on_policy"]["rank_correlation"]):
        assert fmt(value) in text
    assert "## Intended use" in text and "reward_stats.json" in text and "alice/tiny" in text


def test_rlhf_card_writes_the_bundle(run, capsys):
    assert main(["card", str(run)]) == 0
    card = run / "card"
    assert capsys.readouterr().out.strip().endswith("card/README.md")
    for rel in (*CARDS, "eval/report.json", "eval/samples.jsonl", "eval/plots/win_rates.png", "configs/ppo.yaml",
                "recipe.yaml", "card.json", "COMPLETE"):
        assert (card / rel).is_file(), rel
    first = (card / "README.md").read_text()
    assert main(["card", str(run)]) == 0
    assert (card / "README.md").read_text() == first  # deterministic
    assert not (run / "card.partial").exists()


@pytest.mark.parametrize("damage,needle", [
    (lambda r: (r / "eval/COMPLETE").unlink(), "COMPLETE"),
    (lambda r: (r / "eval/report.json").write_text("{not json"), "report.json is not valid JSON"),
    (lambda r: (r / "eval/report.json").write_text('{"schema_version": 9}'), "schema_version 9"),
    (lambda r: (r / "eval/samples.jsonl").write_text('{"prompt": "x", "responses": {}}\n{oops\n'), "samples.jsonl:2"),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(run, capsys, damage, needle):
    damage(run)
    assert main(["card", str(run)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert not (run / "card").exists() and not (run / "card.partial").exists()


# ----------------------------------------------------------------------------- reproduce: the newer report parts


def test_reproduce_compares_gold_win_rates_the_curve_and_good_marks():
    import copy

    from gpt2_rlhf.model_card import reproduce as rep
    from tests.fake_run import make_report

    old = make_report(seed=4)
    assert all(c.ok for c in rep.compare_reports(old, copy.deepcopy(old), 0.02, 0.001))
    new = copy.deepcopy(old)
    new["gold_win_rates"]["ppo_vs_sft"]["win"] += 0.3
    new["overoptimisation"]["points"][2]["gold"]["value"] += 0.5
    new["overoptimisation"]["gold_falls_after_peak"] = not old["overoptimisation"]["gold_falls_after_peak"]
    new["findings"][-1]["good"] = not new["findings"][-1]["good"]
    new["reward_model"]["on_policy"]["accuracy"] = 0.01  # copied from the reward stage, not measured: not compared
    failed = {c.name for c in rep.compare_reports(old, new, 0.02, 0.001) if not c.ok}
    label = old["overoptimisation"]["points"][2]["label"]
    assert failed == {"ppo_vs_sft.win", f"{label}.gold.value", "gold_falls_after_peak", f"{old['findings'][-1]['id']}.good"}


def test_reproduce_skips_a_curve_the_rerun_could_not_measure(tmp_path):
    """A Hub repo holds no PPO snapshots: the rerun's curve is SFT and PPO only; a note says so."""
    import copy

    from gpt2_rlhf.model_card import reproduce as rep

    run = make_run(tmp_path / "run")
    render_card(run)

    def without_snapshots(report, paths):
        new = copy.deepcopy(report)
        curve = new["overoptimisation"]
        curve["points"] = [p for p in curve["points"] if p["label"] in ("sft", "ppo")]
        new["findings"] = [f for f in new["findings"] if f["id"] != "ppo_overoptimisation"]
        return new

    outcome = rep.reproduce(str(run), evaluate=without_snapshots)
    assert outcome.passed, [c for c in outcome.failed]
    assert any("overoptimisation curve not rerun" in n for n in outcome.notes)
    assert not any(c.section == "overoptimisation" for c in outcome.checks)


def test_push_leaves_ppo_snapshots_and_critic_home(tmp_path):
    from gpt2_rlhf.model_card.publish import model_files

    ppo = tmp_path / "ppo"
    (ppo / "snapshots" / "update-000002").mkdir(parents=True)
    (ppo / "snapshots" / "update-000002" / "model.safetensors").write_bytes(b"x")
    (ppo / "critic").mkdir()
    (ppo / "critic" / "model.safetensors").write_bytes(b"x")
    for name in ("model.safetensors", "snapshots.json", "metrics.json"):
        (ppo / name).write_bytes(b"{}")
    assert sorted(model_files(ppo, logs_prefix="training/ppo")) == ["model.safetensors", "training/ppo/metrics.json"]
