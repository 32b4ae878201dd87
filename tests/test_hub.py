"""`rlhf push`: the real HfApi against a local stand-in for the Hub (tests/hub_stub.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from tests.fake_run import make_run
from tests.hub_stub import HubStub
from gpt2_rlhf.cli import main
from gpt2_rlhf.train.config import ConfigError, build
from gpt2_rlhf.model_card.options import HubConfig
from gpt2_rlhf.model_card.publish import (SPACE_INFO, SPACE_VARIABLES, PushError, model_files, push, space_folder,
                                          with_retries)

TOKEN = "hf_zzSecretTokenNeverPrinted123"


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """No token anywhere but where a test puts it; the Hub cache in tmp_path; online mode."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with HubStub(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run", hub={"retry_backoff_s": 0.0})


@pytest.fixture
def space_dir(tmp_path) -> Path:
    d = tmp_path / "space"
    d.mkdir()
    (d / "README.md").write_text("---\ntitle: gpt2-rlhf\nsdk: gradio\napp_file: app.py\n---\n")
    (d / "app.py").write_text("import gradio\n")
    (d / "requirements.txt").write_text("gpt2-rlhf\n")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    return d


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_model_files_leave_run_bookkeeping_and_pickles_behind(run):
    (run / "ppo" / "training_args.bin").write_bytes(b"pickle")
    files = model_files(run / "ppo", logs_prefix="training/ppo")
    assert sorted(files) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                             "training/ppo/metrics.json", "training/ppo/metrics.jsonl"]


def test_hub_config_validates_repo_ids():
    with pytest.raises(ConfigError, match="repo_id: 'no-namespace' is not a Hub repo id"):
        build(HubConfig, {"repo_id": "no-namespace"}, "recipe.yaml: hub")
    assert build(HubConfig, {"repo_id": "alice/x", "private": "true"}, "hub").private is True


def test_dry_run_prints_every_file_and_the_card_metadata_and_sends_nothing(run, hub_env, space_dir):
    lines = []
    result = push(run, "alice/tiny", dry_run=True, sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm",
                  base_repo_id="alice/tiny-base", space_id="alice/tiny-space", space_dir=space_dir,
                  endpoint=hub_env.url, out=lines.append)
    text = "\n".join(lines)
    assert hub_env.requests == [] and result.dry_run  # no token was needed either
    for up in result.uploads:
        assert f"repo {up.repo_id}" in text
        for rel in up.files:
            assert rel in text
    assert "model.safetensors" in text and "reward_stats.json" in text and "eval/report.json" in text
    assert "model-index:" in text and "name: alice/tiny" in text and "variable RLHF_POLICY_ID=alice/tiny" in text
    assert "hardware cpu-basic" in text
    assert "app.cpython-311.pyc" not in text and "COMPLETE" not in text and "checkpoints" not in text


def test_push_uploads_everything_and_the_token_never_leaks(run, hub_env, space_dir, monkeypatch, caplog, capsys, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    before = tree_digest(run)
    push(run, "alice/tiny", sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm", base_repo_id="alice/tiny-base",
         space_id="alice/tiny-space", space_dir=space_dir, endpoint=hub_env.url)

    policy = hub_env.files("alice/tiny")
    for rel in ("README.md", "model.safetensors", "config.json", "tokenizer.json", "eval/report.json",
                "eval/samples.jsonl", "eval/plots/reward_distribution.png", "configs/ppo.yaml", "recipe.yaml",
                "card.json", "training/ppo/metrics.jsonl"):
        assert rel in policy, rel
    assert policy["model.safetensors"] == (run / "ppo/model.safetensors").read_bytes()
    assert json.loads(policy["eval/report.json"]) == json.loads((run / "eval/report.json").read_text())
    assert not any(k.startswith(("reward/", "sft/", "checkpoints")) or k.endswith("COMPLETE") for k in policy)
    assert "reward_stats.json" in hub_env.files("alice/tiny-rm")
    assert "README.md" in hub_env.files("alice/tiny-sft")
    assert sorted(hub_env.files("alice/tiny-space", "space")) == ["README.md", "app.py", "requirements.txt", SPACE_INFO]
    assert all("README.md" in hub_env.files(r) for r in ("alice/tiny", "alice/tiny-sft", "alice/tiny-rm",
                                                         "alice/tiny-base"))  # every pushed repo has a card
    assert hub_env.repos[("space", "alice/tiny-space")].sdk == "gradio"
    assert hub_env.repos[("space", "alice/tiny-space")].hardware == "cpu-basic"  # this front matter suggests none
    assert hub_env.repos[("space", "alice/tiny-space")].variables == {
        "RLHF_POLICY_ID": "alice/tiny", "RLHF_SFT_ID": "alice/tiny-sft", "RLHF_REWARD_ID": "alice/tiny-rm",
        "RLHF_BASE_ID": "alice/tiny-base"}
    space_card = tmp_path / "space_README.md"
    space_card.write_bytes(hub_env.files("alice/tiny-space", "space")["README.md"])
    from huggingface_hub import SpaceCard

    space_meta = SpaceCard.load(space_card).data
    assert space_meta.models == ["alice/tiny", "alice/tiny-sft", "alice/tiny-rm", "alice/tiny-base"]
    assert space_meta.sdk == "gradio" and space_meta.app_file == "app.py"
    assert [c.repo_id for c in hub_env.commits] == ["alice/tiny-eval-samples", "alice/tiny", "alice/tiny-sft",
                                                     "alice/tiny-rm", "alice/tiny-base", "alice/tiny-space"]

    # the card metadata round-trips through ModelCard.load
    card_path = tmp_path / "pushed_README.md"
    card_path.write_bytes(policy["README.md"])
    card = ModelCard.load(card_path)
    assert card.data.model_name == "alice/tiny" and len(card.data.eval_results) >= 5
    assert all(type(r.metric_value) is float for r in card.data.eval_results)
    (tmp_path / "rm.md").write_bytes(hub_env.files("alice/tiny-rm")["README.md"])
    assert ModelCard.load(tmp_path / "rm.md").data.eval_results[0].metric_type == "accuracy"

    # the token: in no log line, no output, no file anywhere under tmp_path, no uploaded file
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert all(TOKEN not in r.getMessage() for r in caplog.records) and len(caplog.records) > 0
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    assert all(TOKEN.encode() not in data for c in hub_env.commits for data in c.files.values())
    assert tree_digest(run) == before  # push writes nothing into the run


def test_private_and_revision(run, hub_env):
    push(run, "alice/tiny", private=True, revision="v1", endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    repo = hub_env.repos[("model", "alice/tiny")]
    assert repo.private and "v1" in repo.branches
    assert "README.md" in hub_env.files("alice/tiny", revision="v1") and hub_env.files("alice/tiny") == {}
    assert hub_env.commits[-1].revision == "v1"


def test_space_variables_match_what_the_space_reads():
    from gpt2_rlhf.space import inference

    assert SPACE_VARIABLES == {"policy": inference.ENV_POLICY, "sft": inference.ENV_SFT, "reward": inference.ENV_REWARD,
                               "base": inference.ENV_BASE, "dpo": inference.ENV_DPO, "rloo": inference.ENV_RLOO,
                               "revision": inference.ENV_REVISION, "prompt_format": inference.ENV_PROMPT_FORMAT}
    assert {var for _, var in inference.ROLES.values()} == {SPACE_VARIABLES[k] for k in ("policy", "sft", "base",
                                                                                          "dpo", "rloo")}


def test_a_space_that_could_not_start_is_refused_with_everything_it_needs_at_once(run, hub_env, space_dir):
    (run / "reward" / "COMPLETE").unlink()
    (run / "sft" / "COMPLETE").unlink()
    with pytest.raises(PushError) as e:
        push(run, "alice/tiny", dry_run=True, space_id="alice/s", space_dir=space_dir, out=lambda s: None)
    assert str(e.value) == ("--space alice/s: the Space needs the reward model that scores the responses (reward/ is "
                            "unfinished; pass --reward-repo-id); and a second model to compare PPO with (the base was "
                            "built locally: pass --base-repo-id, or finish sft/)")
    assert hub_env.requests == []


def test_push_space_derives_the_repo_ids_and_runs_on_zero_gpu(tmp_path, hub_env, caplog):
    """`rlhf push RUN --repo-id ID --space S` alone: reward, SFT and DPO go to ID-reward, ID-sft, ID-dpo, each
    with a card; the Space (the real space/ folder) gets their ids, ZeroGPU, and the run's headline and examples."""
    from huggingface_hub import SpaceCard

    run = make_run(tmp_path / "run", hub={"retry_backoff_s": 0.0}, models=("base", "sft", "ppo", "dpo"))
    caplog.set_level(logging.INFO)
    lines = []
    push(run, "alice/tiny", space_id="alice/arena", endpoint=hub_env.url, token=TOKEN, out=lines.append)
    pushed = sorted(key for key in hub_env.repos)
    assert pushed == [("dataset", "alice/tiny-eval-samples"), ("model", "alice/tiny"), ("model", "alice/tiny-dpo"),
                      ("model", "alice/tiny-reward"), ("model", "alice/tiny-sft"), ("space", "alice/arena")]
    for repo_type, rid in pushed[:-1]:
        assert "README.md" in hub_env.files(rid, repo_type), rid
    dpo_card = hub_env.files("alice/tiny-dpo")["README.md"].decode()
    assert "https://huggingface.co/alice/tiny" in dpo_card and "base_model: alice/tiny-sft" in dpo_card
    space = hub_env.repos[("space", "alice/arena")]
    assert space.hardware == "zero-a10g" and space.sdk == "gradio"
    assert ("POST", "/api/spaces/alice/arena/hardware") in hub_env.requests  # an existing Space is switched too
    assert space.variables == {"RLHF_POLICY_ID": "alice/tiny", "RLHF_SFT_ID": "alice/tiny-sft",
                               "RLHF_REWARD_ID": "alice/tiny-reward", "RLHF_DPO_ID": "alice/tiny-dpo"}
    files = hub_env.files("alice/arena", "space")
    assert {"app.py", "inference.py", "votes.py", "README.md", SPACE_INFO} <= set(files)
    (tmp_path / "space.md").write_bytes(files["README.md"])
    meta = SpaceCard.load(tmp_path / "space.md").data
    assert meta.suggested_hardware == "zero-a10g"
    assert meta.models == ["alice/tiny", "alice/tiny-sft", "alice/tiny-reward", "alice/tiny-dpo"]
    info = json.loads(files[SPACE_INFO])
    report = json.loads((run / "eval" / "report.json").read_text())
    texts = {f["id"]: f["text"] for f in report["findings"]}
    assert info["card_url"] == "https://huggingface.co/alice/tiny"
    assert info["headline"] == [texts["ppo_beats_sft_gold"]]  # the evaluation's sentence, not ours
    held_out = [json.loads(line)["prompt"] for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    assert info["examples"] and all(any(e in p for p in held_out) for e in info["examples"])
    # no config dumps at INFO: what was pushed, not every setting
    assert not any(w in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
                   for w in ("HubConfig(", "CardOptions(", "retry_backoff_s"))


def test_space_hardware_flag(run, hub_env, space_dir):
    result = push(run, "alice/tiny", dry_run=True, space_id="alice/s", space_dir=space_dir, out=lambda s: None,
                  space_hardware="t4-small")
    assert result.uploads[-1].hardware == "t4-small"
    with pytest.raises(PushError, match="--space-hardware: 'gpu-please' is not a Space hardware flavor"):
        push(run, "alice/tiny", dry_run=True, space_id="alice/s", space_dir=space_dir, out=lambda s: None,
             space_hardware="gpu-please")
    assert space_folder().joinpath("app.py").is_file()


def test_missing_token_is_a_clear_error(run, hub_env, capsys):
    assert main(["push", str(run), "--repo-id", "alice/tiny"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "no Hugging Face token: set HF_TOKEN" in err[0]
    assert hub_env.requests == []


def test_transient_errors_are_retried(run, hub_env):
    hub_env.fail("POST", r"/commit/", status=503, times=2)
    hub_env.fail("POST", r"/api/repos/create", status=429, times=1)
    waits = []
    push(run, "alice/tiny", endpoint=hub_env.url, token=TOKEN, out=lambda s: None, sleep=waits.append,
         hub=HubConfig(retry_backoff_s=0.5))
    assert waits == [0.5, 0.5, 1.0]  # the first repo's (the samples dataset's) create and commit were retried
    assert len(hub_env.commits) == 2 and "README.md" in hub_env.files("alice/tiny")


def test_failed_push_leaves_the_run_untouched(run, hub_env, capsys):
    before = tree_digest(run)
    hub_env.fail("POST", r"/commit/", status=500, times=99)
    with pytest.raises(PushError, match=r"alice/tiny-eval-samples: commit of 3 files: .*500"):
        push(run, "alice/tiny", endpoint=hub_env.url, token=TOKEN, out=lambda s: None, sleep=lambda s: None,
             hub=HubConfig(max_retries=2))
    assert sum(1 for m, p in hub_env.requests if p.endswith("/commit/main")) == 3
    assert tree_digest(run) == before and not hub_env.commits


def test_wrong_token_fails_at_once_without_retry(run, hub_env):
    with pytest.raises(PushError, match="401 Unauthorized: the Hub rejected the token") as e:
        push(run, "alice/tiny", endpoint=hub_env.url, token="hf_wrong", out=lambda s: None, sleep=lambda s: None)
    assert "hf_wrong" not in str(e.value)
    assert [p for _, p in hub_env.requests].count("/api/repos/create") == 1 and not hub_env.commits


def test_with_retries_gives_up_on_non_transient_errors():
    calls = []

    def boom():
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(PushError, match="thing: ValueError: bad request"):
        with_retries(boom, "thing", retries=3, backoff_s=0, sleep=lambda s: None)
    assert len(calls) == 1


def test_push_needs_finished_stages(run, hub_env, capsys):
    (run / "ppo" / "COMPLETE").unlink()
    assert main(["push", str(run), "--repo-id", "alice/tiny", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "PPO model" in err and "COMPLETE" in err


# ----------------------------------------------------------------------------- a run whose only policy is DPO or RLOO


@pytest.mark.parametrize("policy", ["dpo", "rloo"])
def test_a_run_whose_only_policy_is_dpo_or_rloo_pushes_it_with_its_card(tmp_path, hub_env, policy):
    """No ppo/: `--repo-id` holds the report's policy (the card's), its logs under training/<stage>/; the Space
    shows it under its own role, and no `<id>-<stage>` copy of it is pushed."""
    run = make_run(tmp_path / "run", hub={"retry_backoff_s": 0.0}, models=("base", "sft", policy))
    before = tree_digest(run)
    push(run, "alice/tiny", space_id="alice/arena", endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    assert sorted(hub_env.repos) == [("dataset", "alice/tiny-eval-samples"), ("model", "alice/tiny"),
                                     ("model", "alice/tiny-reward"), ("model", "alice/tiny-sft"),
                                     ("space", "alice/arena")]
    repo = hub_env.files("alice/tiny")
    for rel in ("model.safetensors", "config.json", "tokenizer.json", f"training/{policy}/metrics.json",
                "README.md", "eval/report.json", "eval/samples.jsonl", "card.json", "recipe.yaml",
                f"configs/{policy}.yaml"):
        assert rel in repo, rel
    assert repo["model.safetensors"] == (run / policy / "model.safetensors").read_bytes()
    assert not any(k.startswith(("training/ppo", "reward/", "sft/")) for k in repo)
    (tmp_path / "card.md").write_bytes(repo["README.md"])
    card = ModelCard.load(tmp_path / "card.md")
    name = {"dpo": "DPO", "rloo": "RLOO"}[policy]
    assert card.text.lstrip().startswith("# alice/tiny") and f"{name} is a" in card.text
    assert policy in card.data.tags and card.data.eval_results
    assert card.text == render_card_text(run, "alice/tiny")  # the card `rlhf card` renders for that repo
    space = hub_env.repos[("space", "alice/arena")]
    assert space.variables == {f"RLHF_{policy.upper()}_ID": "alice/tiny", "RLHF_SFT_ID": "alice/tiny-sft",
                               "RLHF_REWARD_ID": "alice/tiny-reward"}
    info = json.loads(hub_env.files("alice/arena", "space")[SPACE_INFO])
    report = json.loads((run / "eval" / "report.json").read_text())
    assert info["headline"] == [next(f["text"] for f in report["findings"] if f["id"] == f"{policy}_beats_sft_gold")]
    assert tree_digest(run) == before


def render_card_text(run: Path, repo_id: str) -> str:
    from gpt2_rlhf.model_card.render import render_texts
    from gpt2_rlhf.model_card.options import CardOptions
    from gpt2_rlhf.model_card.sources import CardSources

    src = CardSources.from_run_dir(run)
    text = render_texts(src, CardOptions(repo_id=repo_id, sft_repo_id=f"{repo_id}-sft",
                                         reward_repo_id=f"{repo_id}-reward",
                                         samples_repo_id=f"{repo_id}-eval-samples", examples=3))["README.md"]
    return ModelCard(text).text


def test_a_run_without_any_trained_policy_names_what_is_missing(tmp_path, hub_env, capsys):
    run = make_run(tmp_path / "run", models=("base", "sft", "dpo"))
    shutil.rmtree(run / "dpo")
    assert main(["push", str(run), "--repo-id", "alice/tiny", "--dry-run"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"rlhf push: error: no trained policy to push: {run} has no ppo/, dpo/ or rloo/ (train one with "
                   f"`rlhf ppo`, `rlhf dpo` or `rlhf rloo`, then `rlhf evaluate`)"]
    assert hub_env.requests == []


def test_a_dpo_only_run_pushed_to_the_hub_reproduces(tmp_path, hub_env, monkeypatch):
    """Real tiny models: base, SFT, a reward model and DPO (a copy of SFT), evaluated; pushed with every model it
    needs, then `rlhf reproduce alice/dpo` reruns the evaluation from the downloaded repos and passes."""
    import torch

    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.model_card import reproduce as rep
    from tests.test_compare_eval import add_policy
    from tests.test_evaluation import eval_recipe, make_tiny_run

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))  # downloads stay in tmp_path
    torch.set_num_threads(1)
    run = make_tiny_run(tmp_path / "run")
    add_policy(run, "dpo", "sft", {"train_loss": 0.69, "train_seconds": 1.5})
    shutil.rmtree(run / "ppo")
    evaluate(eval_recipe(**{"eval.n_prompts": 4, "eval.bootstrap_samples": 20}), run)
    push(run, "alice/dpo", sft_repo_id="alice/dpo-sft", reward_repo_id="alice/dpo-rm", base_repo_id="alice/dpo-base",
         endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    assert hub_env.files("alice/dpo")["model.safetensors"] == (run / "dpo" / "model.safetensors").read_bytes()
    outcome = rep.reproduce("alice/dpo", endpoint=hub_env.url)
    assert outcome.passed, rep.format_outcome("alice/dpo", outcome)
    assert any(c.name == "dpo.revision" for c in outcome.checks)


def test_a_run_with_ppo_dpo_and_rloo_pushed_to_the_hub_reproduces_every_policy(tmp_path, hub_env, monkeypatch):
    """The card's policy is PPO; DPO and RLOO, which its report also scores, go to <id>-dpo and <id>-rloo
    without --space, the card records them, and `rlhf reproduce alice/all` reruns all five models from the Hub."""
    import torch

    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.model_card import reproduce as rep
    from tests.test_compare_eval import add_policy
    from tests.test_evaluation import eval_recipe, make_tiny_run

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    torch.set_num_threads(1)
    run = make_tiny_run(tmp_path / "run")
    add_policy(run, "dpo", "sft", {"train_loss": 0.69, "train_seconds": 1.5})
    add_policy(run, "rloo", "sft", {"train_seconds": 2.5})
    evaluate(eval_recipe(**{"eval.n_prompts": 4, "eval.bootstrap_samples": 20}), run)
    push(run, "alice/all", sft_repo_id="alice/all-sft", reward_repo_id="alice/all-rm", base_repo_id="alice/all-base",
         endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    for stage in ("dpo", "rloo"):
        files = hub_env.files(f"alice/all-{stage}")
        assert files["model.safetensors"] == (run / stage / "model.safetensors").read_bytes()
    bundle = json.loads(hub_env.files("alice/all")["card.json"])
    assert bundle["options"]["policy_repo_ids"] == {"dpo": "alice/all-dpo", "rloo": "alice/all-rloo"}

    seen = {}
    real = rep.rerun_evaluation

    def spy(report, paths):
        seen.update(paths)
        return real(report, paths)

    outcome = rep.reproduce("alice/all", evaluate=spy, endpoint=hub_env.url)
    assert outcome.passed, rep.format_outcome("alice/all", outcome)
    assert set(seen) >= {"base", "sft", "ppo", "dpo", "rloo", "reward"}
    for stage in ("dpo", "rloo"):
        assert (Path(seen[stage]) / "model.safetensors").read_bytes() == (run / stage / "model.safetensors").read_bytes()
