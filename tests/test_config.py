"""Recipes: YAML sections map onto dataclasses, flags override, unknown keys are errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gpt2_rlhf.stages import SECTIONS, load_recipe
from gpt2_rlhf.train.config import ConfigError, _coerce, build, check, recipe_path


@dataclass
class Toy:
    learning_rate: float = field(default=1e-3, metadata={"help": "step size"})
    steps: int = 10
    name: str | None = None
    flags: list[str] = field(default_factory=list)
    on: bool = False

    def __post_init__(self):
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")


@pytest.mark.parametrize(
    "raw,tp,expected",
    [("5e-5", float, 5e-5), (3, float, 3.0), ("12", int, 12), (4.0, int, 4), ("true", bool, True),
     ("off", bool, False), ("null", str | None, None), ("a,b", list[str], ["a", "b"]), (7, str, "7")],
)
def test_coerce_values(raw, tp, expected):
    assert _coerce(raw, tp, "x") == expected


@pytest.mark.parametrize("raw,tp", [("fast", float), (1.5, int), ("maybe", bool), (True, int), ({"a": 1}, str)])
def test_coerce_rejects_with_the_key_name(raw, tp):
    with pytest.raises(ConfigError, match=r"^sec\.key: "):
        _coerce(raw, tp, "sec.key")


def test_build_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        build(Toy, {"learning_rat": 1}, "r.yaml: sft")


def test_build_runs_post_init_validation():
    with pytest.raises(ConfigError, match="r.yaml: sft: learning_rate must be > 0, got -1.0"):
        build(Toy, {"learning_rate": "-1"}, "r.yaml: sft")
    assert build(Toy, {"learning_rate": "2e-4", "steps": "3"}, "w").learning_rate == pytest.approx(2e-4)


@pytest.mark.parametrize("name", ["tiny", "micro", "gpt2-hh"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(name)
    assert recipe.stages
    for section in SECTIONS:
        assert getattr(recipe, section) is not None


def test_real_recipe_has_the_seed_card_hyperparameters():
    r = load_recipe("gpt2-hh")
    assert r.base.model == "gpt2"
    assert r.data.dataset == "Anthropic/hh-rlhf"
    assert r.sft.learning_rate == pytest.approx(5e-5)
    assert r.reward.learning_rate == pytest.approx(1e-5)
    assert r.ppo.learning_rate == pytest.approx(1e-5)
    assert r.ppo.kl_coef == pytest.approx(0.1)
    assert r.ppo.cliprange == pytest.approx(0.2)


def test_overrides_beat_yaml_and_are_validated(tmp_path):
    r = load_recipe("tiny", {"sft.learning_rate": "3e-4", "seed": "7", "data.dataset": "x.jsonl"})
    assert r.sft.learning_rate == pytest.approx(3e-4)
    assert r.seed == 7 and r.data.dataset == "x.jsonl"
    with pytest.raises(ConfigError, match=r"--sft\.no_such_field"):
        load_recipe("tiny", {"sft.no_such_field": "1"})
    with pytest.raises(ConfigError, match=r"--ppo\.learning_rate"):
        load_recipe("tiny", {"ppo.learning_rate": "-1e-5"})


def test_recipe_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nsft:\n  learnig_rate: 1e-4\n")
    with pytest.raises(ConfigError, match=rf"{bad}: sft: unknown key 'learnig_rate'"):
        load_recipe(bad)
    bad.write_text("sfft: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sfft' \(did you mean 'sft'\?\)"):
        load_recipe(bad)
    bad.write_text("stages: [base, kto]\n")
    with pytest.raises(ConfigError, match=r"unknown stage"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(bad)
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="no such file"):
        recipe_path(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        recipe_path(tmp_path)


def test_a_shipped_name_wins_over_a_same_named_folder(tmp_path, monkeypatch):
    (tmp_path / "tiny").mkdir()  # e.g. benchmark artifacts in the working directory
    monkeypatch.chdir(tmp_path)
    assert recipe_path("tiny").name == "tiny.yaml" and recipe_path("tiny").is_file()


def test_recipe_round_trips_through_yaml(tmp_path):
    r = load_recipe("micro", {"sft.learning_rate": "1e-3"})
    r.save(tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again.to_dict() == r.to_dict()


def test_a_section_set_by_hand_is_read_whatever_the_table():
    """`rlhf reproduce` builds a recipe of the recorded data and eval sections on the training table."""
    from gpt2_rlhf.evaluation.config import EvalConfig
    from gpt2_rlhf.train.config import Recipe

    recipe = Recipe(seed=3)
    recipe.sections["eval"] = EvalConfig(n_prompts=7)
    assert recipe.eval.n_prompts == 7 and recipe.data.dataset == "embedded"
    assert recipe.to_dict()["eval"]["n_prompts"] == 7
    with pytest.raises(AttributeError):
        recipe.hub  # neither set nor in the training table


# The TrainingArguments fields of the SFT, reward and DPO sections, with each stage's defaults as they were
# when every stage declared its own (hand-listed: a change to a default must show here).
TRAINER_DEFAULTS = dict(num_train_epochs=1.0, max_steps=-1, per_device_train_batch_size=8,
                        gradient_accumulation_steps=1, lr_scheduler_type="linear", warmup_steps=0.0, weight_decay=0.0,
                        max_length=None, max_train_samples=None, logging_steps=10, save_steps=200, save_total_limit=2,
                        precision="auto", gradient_checkpointing=False)
STAGE_DEFAULTS = {
    "sft": dict(TRAINER_DEFAULTS, learning_rate=5e-5, per_device_eval_batch_size=16, max_eval_samples=256),
    "reward": dict(TRAINER_DEFAULTS, learning_rate=1e-5, per_device_eval_batch_size=32, max_eval_samples=None),
    "dpo": dict(TRAINER_DEFAULTS, learning_rate=1e-6, per_device_eval_batch_size=16, max_eval_samples=256),
}


@pytest.mark.parametrize("stage", sorted(STAGE_DEFAULTS))
def test_sft_reward_and_dpo_share_the_trainer_fields_with_their_own_defaults(stage):
    import dataclasses

    from gpt2_rlhf.train.config import section_class
    from gpt2_rlhf.train.hf_training import TrainerFields

    cls = section_class(stage)
    assert issubclass(cls, TrainerFields)
    base = {f.name: f for f in dataclasses.fields(TrainerFields)}
    assert set(base) == set(STAGE_DEFAULTS[stage])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in base.items():
        assert fields[name].metadata["help"] == f.metadata["help"], f"{stage}.{name}: its own help text"
        assert fields[name].type == f.type, f"{stage}.{name}"
    made = cls()
    for name, expected in STAGE_DEFAULTS[stage].items():
        assert getattr(made, name) == expected, f"{stage}.{name}"
    # the shared checks run for every stage, its own checks still after them
    with pytest.raises(ConfigError, match=rf"{stage}: learning_rate: must be positive"):
        build(cls, {"learning_rate": "-1"}, stage)
    with pytest.raises(ConfigError, match=r"lr_scheduler_type: 'nope' is not one of"):
        build(cls, {"lr_scheduler_type": "nope"}, stage)
    own = {"sft": None, "reward": ("histogram_bins", 0), "dpo": ("beta", 0)}[stage]
    if own:
        with pytest.raises(ConfigError, match=rf"{own[0]}: must be positive"):
            build(cls, {own[0]: own[1]}, stage)


def test_rloo_shares_the_checkpoint_and_device_fields():
    import dataclasses

    from gpt2_rlhf.train.hf_training import TrainerFields
    from gpt2_rlhf.train.rloo import RLOOStageConfig

    base = {f.name: f for f in dataclasses.fields(TrainerFields)}
    rloo = {f.name: f for f in dataclasses.fields(RLOOStageConfig)}
    for name in ("save_total_limit", "precision", "gradient_checkpointing"):
        assert rloo[name].metadata["help"] == base[name].metadata["help"]
        assert rloo[name].default == base[name].default == TRAINER_DEFAULTS[name]
    # its optimiser fields follow the ppo section (null: ppo's value), so they are not TrainerFields'
    assert RLOOStageConfig().learning_rate is None and RLOOStageConfig().weight_decay is None


def test_each_stage_flag_has_the_one_help_text():
    import dataclasses

    from gpt2_rlhf.cli import build_parser
    from gpt2_rlhf.train.hf_training import TrainerFields

    for stage in STAGE_DEFAULTS:
        sub = next(a for a in build_parser(stage)._actions if a.dest == "command").choices[stage]
        helps = {o: a.help for a in sub._actions for o in a.option_strings}
        for f in dataclasses.fields(TrainerFields):
            assert helps[f"--{stage}.{f.name}"] == f.metadata["help"].replace("%", "%%")


@pytest.mark.parametrize("key,value,message", [
    ("ppo.monitor_pick_se", "-1", "monitor_pick_se must be >= 0"),
    ("ppo.monitor_patience", "0", "monitor_patience must be >= 1"),
    ("ppo.monitor_z", "-0.5", "monitor_z must be >= 0"),
    ("ppo.monitor_aggregate", "max", "'max' is not one of"),
])
def test_monitor_settings_are_validated_with_the_field_named(key, value, message):
    with pytest.raises(ConfigError, match=rf"--{key}.*{message}"):
        load_recipe("monitor", {key: value})


@pytest.mark.parametrize("key,value,message", [
    ("reward.n_layer", "0", "n_layer: must be >= 1 or null, got 0"),
    ("reward.later_dataset_pairs", "-1", "later_dataset_pairs: must be >= 0 or null, got -1"),
])
def test_reward_size_settings_are_validated_with_the_field_named(key, value, message):
    with pytest.raises(ConfigError, match=rf"--{key}.*{message}"):
        load_recipe("tiny", {key: value})


def test_later_dataset_pairs_with_a_replay_sample_is_refused():
    with pytest.raises(ConfigError, match="later_dataset_pairs: only for fresh, uncapped rounds"):
        load_recipe("tiny", {"reward.later_dataset_pairs": "0", "reward.warm_start": "true"})
