"""The held-out judges and PPO's reward-hacking monitor on the card, through `rlhf push` and `rlhf reproduce`.

A run whose reward stage trained held-out judges has `metrics.judges` (a row of the results tables, beside
the reward model's) and `<policy>_judge_hacking`; a PPO stage that ran the monitor has `ppo_monitor`. A
detected hacking and a monitor warning are stated first ("Read this first"), like gold's reward hacking,
and every finding is on the card once. The judges travel with the reward model repo (`judges/<name>/`),
so a card pushed to the Hub reproduces with them.

Fabricated runs (tests/fake_run.py, no model loaded) for the card and the plan; one micro run trained with
judges and the monitor, pushed to the local Hub stand-in and reproduced from it (slow).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from gpt2_rlhf.evaluation.report import findings
from gpt2_rlhf.evaluation.schema import validate_report
from gpt2_rlhf.model_card import reproduce as rep
from gpt2_rlhf.model_card.context import headline_values, value_cell
from gpt2_rlhf.model_card.markdown import numbers_in
from gpt2_rlhf.model_card.options import CardOptions
from gpt2_rlhf.model_card.render import render_card, render_texts
from gpt2_rlhf.model_card.sources import CardSources
from tests.fake_run import MONITOR_JUDGES, make_monitor, make_run, model_bytes
from tests.hub_stub import HubStub

TOKEN = "hf_cardJudgesStubToken"
JUDGE_NAMES = MONITOR_JUDGES
JUDGES_LABEL = "Held-out judges (mean normalised score)"


def V(value, lo, hi, n=24):
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}




# (PPO, SFT) on the judges for each outcome of ppo_judge_hacking, with PPO beating SFT on the reward model
JUDGES = {"hacking": (V(0.01, -0.05, 0.07), V(0.0, -0.06, 0.06)),
          "no hacking": (V(0.9, 0.8, 1.0), V(0.0, -0.06, 0.06))}


def add_judges(run: Path, judges: str = "hacking", verdict: str | None = "warning") -> dict:
    """The fabricated run as one whose reward stage trained judges (reward/judges/<name>/, metrics.judges
    beside the proxy's row, the `judges` block) and whose PPO ran the monitor (`verdict`; None: no monitor),
    its findings stated again from the numbers as the evaluation does."""
    path = run / "eval" / "report.json"
    report = json.loads(path.read_text())
    jp, js = JUDGES[judges]
    report["metrics"]["reward"]["ppo"], report["metrics"]["reward"]["sft"] = V(1.5, 1.3, 1.7), V(0.0, -0.1, 0.1)
    metrics = {}
    for name, per_model in report["metrics"].items():
        metrics[name] = per_model
        if name == "reward_raw":
            metrics["judges"] = {"base": V(-0.4, -0.5, -0.3), "sft": js, "ppo": jp}
    report["metrics"] = metrics
    report["judges"] = {"names": JUDGE_NAMES, "path": str(run / "reward" / "judges")}
    mon = make_monitor(verdict, gold=True) if verdict else None
    if mon is not None:
        (run / "ppo" / "monitor.json").write_text(json.dumps(mon))
    report["findings"] = findings(report["metrics"], report["reward_model"], report.get("gold_win_rates"),
                                  report.get("overoptimisation"), reward=report.get("reward"), monitor=mon)
    validate_report(report)
    path.write_text(json.dumps(report, indent=1))
    for name in JUDGE_NAMES:  # as train/reward.py's train_judge writes them
        d = run / "reward" / "judges" / name
        d.mkdir(parents=True)
        for rel, data in model_bytes(f"judge-{name}").items():
            (d / rel).write_bytes(data)
        (d / "reward_stats.json").write_text(json.dumps({"mean": 0.1, "std": 1.1, "n": 24, "source": "samples"}))
        (d / "metrics.json").write_text(json.dumps({"seed": 101, "accuracy": 0.7}))
        (d / "training_args.bin").write_bytes(b"pickle")
    return report


def cards(run: Path, **opts) -> dict[str, str]:
    return render_texts(CardSources.from_run_dir(run), CardOptions(**opts))


def first_screen(card: str, lines: int = 40) -> str:
    return "\n".join(card.split("\n---\n", 1)[1].splitlines()[:lines])


def same(report: dict, paths: dict) -> dict:
    return copy.deepcopy(report)


# ----------------------------------------------------------------------------- the card


def test_the_judges_row_sits_beside_the_reward_models_with_a_note(tmp_path):
    run = make_run(tmp_path / "run")
    report = add_judges(run)
    card = cards(run)["README.md"]
    j = report["metrics"]["judges"]
    row = f"| {JUDGES_LABEL} | {value_cell(j['base'])} | {value_cell(j['sft'])} | {value_cell(j['ppo'])} |"
    results = card[card.index("## Results"):]
    assert row in results and row in first_screen(card)  # the results table and the first screen's
    lines = results.splitlines()
    at = lines.index(row)
    assert lines[at - 1].startswith("| Reward (raw RM score) |") and lines[at + 1].startswith("| Gold judge score |")
    compact = first_screen(card).splitlines()
    at = compact.index(row)
    assert compact[at - 1].startswith("| Reward (normalised RM score) |")
    note = next(line for line in lines if line.startswith(f"- **{JUDGES_LABEL}**: "))
    assert "no policy was optimised against" in note and "zero is SFT's level" in note
    assert "The judges: `holdout` and `seed-101`, under `judges/` next to the reward model." in note
    # pushed, the note names the reward model's repository that holds them
    pushed = cards(run, repo_id="alice/tiny", reward_repo_id="alice/tiny-rm")["README.md"]
    assert ("under `judges/` in the reward model's repository [alice/tiny-rm](https://huggingface.co/alice/tiny-rm)"
            in pushed)


def test_judges_combined_by_their_minimum_are_labelled_so(tmp_path):
    """A report whose judges row is their per-response minimum (`judges.aggregate: min`, the evaluation's
    default) says so in the row's label and note; without `aggregate` (older reports) it is the mean."""
    from gpt2_rlhf.evaluation.schema import validate_report

    run = make_run(tmp_path / "run")
    add_judges(run)
    path = run / "eval" / "report.json"
    report = json.loads(path.read_text())
    report["judges"]["aggregate"] = "min"
    validate_report(report)
    path.write_text(json.dumps(report))
    card = cards(run)["README.md"]
    label = "Held-out judges (worst-case normalised score)"
    assert f"| {label} |" in card[card.index("## Results"):] and f"| {label} |" in first_screen(card)
    assert JUDGES_LABEL not in card
    note = next(line for line in card.splitlines() if line.startswith(f"- **{label}**: "))
    assert "the lowest score" in note and "only when every judge says so" in note


def test_every_number_comes_from_the_run_and_the_model_index_keeps_the_headlines(tmp_path):
    from tests.test_card import allowed_numbers

    run = make_run(tmp_path / "run")
    report = add_judges(run)
    plain = make_run(tmp_path / "plain")
    render_card(run, repo_id="alice/tiny")
    allowed = allowed_numbers(run)
    for rel in ("README.md", "reward/README.md", "sft/README.md"):
        text = (run / "card" / rel).read_text()
        assert not [n for n in numbers_in(text) if n not in allowed], rel
    data = ModelCard.load(run / "card" / "README.md").data
    assert {r.metric_type for r in data.eval_results} == {h[0] for h in headline_values(report)}
    assert "judges" not in {r.metric_type for r in data.eval_results}
    assert len(data.eval_results) == len(headline_values(json.loads((plain / "eval/report.json").read_text())))


def test_without_judges_and_monitor_nothing_of_them_is_on_the_cards(tmp_path):
    run = make_run(tmp_path / "run")
    for rel, text in cards(run).items():
        assert "Held-out judges" not in text and "judges/" not in text and "reward-hacking monitor" not in text, rel


@pytest.mark.parametrize("judges", list(JUDGES))
@pytest.mark.parametrize("verdict", ["warning", "no warning", "no judges"])
def test_a_detected_hacking_or_a_monitor_warning_is_stated_first_and_every_finding_once(tmp_path, judges, verdict):
    run = make_run(tmp_path / "run")
    report = add_judges(run, judges, verdict)
    card = cards(run)["README.md"]
    by_id = {f["id"]: f for f in report["findings"]}
    hacking, mon = by_id["ppo_judge_hacking"], by_id["ppo_monitor"]
    assert hacking["holds"] is (judges == "hacking") and mon["holds"] is (verdict == "warning")
    top = first_screen(card, 60)
    head = top[top.index("> **Read this first.**"):] if "**Read this first.**" in top else ""
    for f, warned in ((hacking, judges == "hacking"), (mon, verdict == "warning")):
        text = " ".join(f["text"].split())
        assert (text in head) is warned, f["id"]
        pointer = f"`{f['id']}`: stated under **Read this first**"
        assert (pointer in card) is warned, f["id"]
        mark = "✅" if f["good"] else "❌"
        assert f"- {mark} {pointer}" in card if warned else f"- {mark} {text}" in card
    for f in report["findings"]:  # each once: its text, or its text stated first and a pointer to it
        text = " ".join(f["text"].split())
        assert card.count(text) == 1, f["id"]
        assert card.count(f"`{f['id']}`: stated under") == (1 if f["holds"] and not f["good"] and f["id"] in (
            "ppo_reward_hacking", "ppo_judge_hacking", "ppo_overoptimisation", "ppo_monitor") else 0), f["id"]
    # a ❌ finding is named in the limitations, as the others are
    limits = card[card.index("## Limitations"):]
    assert ("`ppo_monitor`" in limits) is (not mon["good"])
    assert ("`ppo_judge_hacking`" in limits) is (not hacking["good"])


def test_the_reward_card_says_where_the_judges_are(tmp_path):
    run = make_run(tmp_path / "run")
    add_judges(run)
    rm_card = cards(run)["reward/README.md"]
    section = rm_card[rm_card.index("## Held-out judges"):]
    assert "under `judges/<name>/`" in section and "(`holdout` and `seed-101`)" in section
    assert 'subfolder="judges/<name>"' in section and "`metrics.judges`" in section


def test_card_then_reproduce_passes_with_the_judges(tmp_path):
    run = make_run(tmp_path / "run")
    add_judges(run)
    render_card(run)
    outcome = rep.reproduce(str(run), evaluate=same)
    assert outcome.passed, rep.format_outcome(str(run), outcome)
    assert any(c.name == "judges.ppo.value" for c in outcome.checks)
    assert any(c.name == "ppo_judge_hacking" for c in outcome.checks) and any(c.name == "ppo_monitor"
                                                                              for c in outcome.checks)


# ----------------------------------------------------------------------------- push and reproduce from the Hub


@pytest.fixture
def online(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


def push_fake(run: Path, hub: HubStub, **kw) -> None:
    from gpt2_rlhf.model_card.publish import push

    push(run, "alice/tiny", sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm",
         base_repo_id="alice/tiny-base", endpoint=hub.url, token=TOKEN, out=lambda s: None, **kw)


def test_push_uploads_the_judges_with_the_reward_model_and_the_monitor_with_ppo(tmp_path, online):
    run = make_run(tmp_path / "run")
    add_judges(run)
    with HubStub(token=TOKEN) as hub:
        push_fake(run, hub)
        rm = hub.files("alice/tiny-rm")
        policy = hub.files("alice/tiny")
    for name in JUDGE_NAMES:
        for rel in ("model.safetensors", "config.json", "tokenizer.json", "reward_stats.json", "metrics.json"):
            got = rm[f"judges/{name}/{rel}"]
            assert got == (run / "reward" / "judges" / name / rel).read_bytes(), (name, rel)
        assert f"judges/{name}/training_args.bin" not in rm  # a pickle stays home
    assert rm["model.safetensors"] == (run / "reward" / "model.safetensors").read_bytes()
    assert "## Held-out judges" in rm["README.md"].decode()
    assert json.loads(policy["monitor.json"]) == json.loads((run / "ppo" / "monitor.json").read_text())


def test_reproduce_from_the_hub_reads_the_pushed_repos_as_their_stages(tmp_path, online):
    """The rerun reads the reward model repo as a finished reward stage with its judges (the evaluation reads
    judges of a finished stage only) and PPO's repo with its metrics.json back in place (its training seconds);
    nothing is written into the download cache."""
    run = make_run(tmp_path / "run")
    add_judges(run)
    seen = {}

    def spy(report, paths):  # what rerun_evaluation hands the evaluation
        staging = tmp_path / "staging"
        staged = rep.stage_repos(paths, staging)
        reward, ppo = Path(staged["reward"]), Path(staged["ppo"])
        assert reward.parent == ppo.parent == staging and staged["sft"] == paths["sft"]
        seen.update(complete=json.loads((reward / "COMPLETE").read_text()), source=paths["reward"],
                    ppo_source=paths["ppo"],
                    judges=sorted(p.name for p in (reward / "judges").iterdir()),
                    weights=(reward / "model.safetensors").read_bytes(),
                    judge=(reward / "judges" / "holdout" / "model.safetensors").read_bytes(),
                    ppo_metrics=json.loads((ppo / "metrics.json").read_text()),
                    monitor=json.loads((ppo / "monitor.json").read_text()))
        return copy.deepcopy(report)

    with HubStub(token=TOKEN) as hub:
        push_fake(run, hub)
        outcome = rep.reproduce("alice/tiny", evaluate=spy, endpoint=hub.url)
    assert outcome.passed, rep.format_outcome("alice/tiny", outcome)
    assert seen["complete"]["stage"] == "reward" and seen["complete"]["source"] == seen["source"]
    assert seen["judges"] == JUDGE_NAMES
    assert seen["weights"] == (run / "reward" / "model.safetensors").read_bytes()
    assert seen["judge"] == (run / "reward" / "judges" / "holdout" / "model.safetensors").read_bytes()
    assert seen["ppo_metrics"] == json.loads((run / "ppo" / "metrics.json").read_text())
    assert seen["monitor"] == json.loads((run / "ppo" / "monitor.json").read_text())
    assert any(c.name == "judges.ppo.value" for c in outcome.checks)
    assert not list((tmp_path / "hf_home").rglob("COMPLETE"))  # the download cache is as downloaded
    assert not (Path(seen["ppo_source"]) / "metrics.json").exists()
    assert not any("judges not rerun" in n for n in outcome.notes)


def test_a_reward_repo_pushed_without_judges_is_noted_not_a_mismatch(tmp_path, online):
    run = make_run(tmp_path / "run")
    report = add_judges(run)
    shutil.rmtree(run / "reward" / "judges")  # a reward repo without them (trimmed, or pushed otherwise)

    def rerun_without_judges(old, paths):
        assert not (Path(paths["reward"]) / "COMPLETE").exists()
        new = rep.without_judges(old)
        assert "judges" not in new["metrics"] and "judges" not in new
        assert [f["id"] for f in new["findings"]] == [f["id"] for f in old["findings"] if f["id"] != "ppo_judge_hacking"]
        return new

    with HubStub(token=TOKEN) as hub:
        push_fake(run, hub)
        outcome = rep.reproduce("alice/tiny", evaluate=rerun_without_judges, endpoint=hub.url)
    assert outcome.passed, rep.format_outcome("alice/tiny", outcome)
    assert ("held-out judges not rerun: the reward model repo alice/tiny-rm holds no judges/ folder (push the run's "
            "reward model again to add them): metrics.judges and the finding ppo_judge_hacking not compared"
            in outcome.notes)
    assert not any(c.name.startswith("judges.") or c.name.startswith("ppo_judge_hacking") for c in outcome.checks)
    assert any(c.name == "ppo_monitor" for c in outcome.checks)  # the monitor's file went with PPO
    assert report["metrics"]["judges"]  # the card still shows them: the card check passed on them


@pytest.mark.slow
def test_a_judged_micro_run_pushed_to_the_hub_reproduces(micro_run, tmp_path, online, capsys):
    """A real run: reward with a held-out judge and a seed judge, PPO with the monitor, a small evaluation;
    pushed to the stand-in with its base, SFT and reward models, then `rlhf reproduce alice/judged` reruns
    the evaluation from the downloaded repos, judges included, and passes."""
    from gpt2_rlhf.cli import main
    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.model_card.publish import push
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train import reward
    from gpt2_rlhf.train.ppo import main as ppo
    from tests.conftest import copy_run

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    reward.main(load_recipe("micro", {"reward.judges": "1", "reward.judge_holdout": "0.25",
                                      "reward.max_steps": "3"}), run)
    ppo(load_recipe("micro", {"ppo.monitor_every": "2", "ppo.monitor_prompts": "4", "ppo.eval_prompts": "0"}), run)
    evaluate(load_recipe("micro", {"eval.n_prompts": "4", "eval.bootstrap_samples": "20", "eval.device": "cpu",
                                   "eval.curve_prompts": "0"}), run)
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["judges"]["names"] == JUDGE_NAMES and "ppo_monitor" in [f["id"] for f in report["findings"]]
    with HubStub(token=TOKEN) as hub:
        push(run, "alice/judged", sft_repo_id="alice/judged-sft", reward_repo_id="alice/judged-rm",
             base_repo_id="alice/judged-base", endpoint=hub.url, token=TOKEN, out=lambda s: None)
        assert {f"judges/{n}/model.safetensors" for n in JUDGE_NAMES} <= set(hub.files("alice/judged-rm"))
        outcome = rep.reproduce("alice/judged", endpoint=hub.url)
    assert outcome.passed, rep.format_outcome("alice/judged", outcome)
    checked = {c.name for c in outcome.checks}
    assert {"judges.ppo.value", "judges.sft.value", "ppo_judge_hacking", "ppo_monitor"} <= checked
