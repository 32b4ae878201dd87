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
