"""Safe loading by default: safetensors only, no remote code unless asked, no unrestricted unpickling.

Two kinds of checks:

* a policy scan of the source tree (train/, evaluation/, model_card/, space/,
  benchmarks/) with `ast`, so a new call that breaks the policy fails here the day
  it is written, wherever it is;
* behaviour: the loaders refuse a folder of pickle weights, and refuse (without
  running it) a folder whose config asks for custom code.

Why an explicit `trust_remote_code=False` is required and not merely "not True":
when the argument is left out, transformers 5 *asks on stdin* ("Do you wish to run
the custom code? [y/N]") for a folder with an `auto_map`, so a user can type `y`,
and a server (the Space) blocks on the question. Passing False makes it refuse.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("rlhf", "train", "evaluation", "model_card", "space", "benchmarks")

# Loading model weights outside train/modeling.py: each exception with its reason.
WEIGHT_LOADERS = {
    "train/modeling.py": "the shared loaders every stage uses",
    "space/inference.py": "the Space folder is deployed on its own and cannot import train/",
}
UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
              ("cloudpickle", "load"), ("cloudpickle", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle")}


def sources() -> list[Path]:
    return sorted(p for d in SCANNED if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    """`torch.load` -> "torch.load", `AutoModel.from_pretrained` -> "AutoModel.from_pretrained"."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_the_scan_sees_the_code():
    files = {p.relative_to(ROOT).as_posix() for p in sources()}
    assert {"train/modeling.py", "rlhf/cli.py", "model_card/publish.py"} <= files


def test_torch_load_always_restricts_unpickling():
    bad = []
    for path in sources():
        for call in calls(path):
            if dotted(call.func) == "torch.load" and not is_const(keyword(call, "weights_only"), True):
                bad.append(where(path, call))
    assert not bad, f"torch.load without weights_only=True (arbitrary code on load): {bad}"


def test_nothing_unpickles_by_other_means():
    bad = []
    for path in sources():
        for call in calls(path):
            name = dotted(call.func)
            head, _, attr = name.rpartition(".")
            if (head.split(".")[-1], attr) in UNPICKLERS:
                bad.append(f"{where(path, call)} {name}")
            if attr == "load" and head.split(".")[-1] in ("np", "numpy") and is_const(keyword(call, "allow_pickle"), True):
                bad.append(f"{where(path, call)} {name}(allow_pickle=True)")
    assert not bad, f"unpickling calls: {bad}"


def test_from_pretrained_never_runs_remote_code_by_default():
    """Every from_pretrained passes trust_remote_code explicitly: literal False, or a variable plumbed from a
    config field that defaults to False (checked below); never literal True."""
    missing, true = [], []
    for path in sources():
        for call in calls(path):
            if isinstance(call.func, ast.Attribute) and call.func.attr == "from_pretrained":
                value = keyword(call, "trust_remote_code")
                if value is None:
                    missing.append(f"{where(path, call)} {dotted(call.func)}")
                elif is_const(value, True):
                    true.append(where(path, call))
    assert not true, f"trust_remote_code=True hard-coded: {true}"
    assert not missing, ("from_pretrained without an explicit trust_remote_code (transformers then asks on stdin, "
                         f"and a server blocks): {missing}")


def _is_weight_loader(name: str) -> bool:
    cls = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return "Model" in cls or "For" in cls


def test_model_weights_load_as_safetensors_and_only_where_allowed():
    unsafe, elsewhere = [], []
    for path in sources():
        rel = path.relative_to(ROOT).as_posix()
        for call in calls(path):
            name = dotted(call.func)
            if name.endswith(".from_pretrained") and _is_weight_loader(name):
                if not is_const(keyword(call, "use_safetensors"), True):
                    unsafe.append(f"{where(path, call)} {name}")
                if rel not in WEIGHT_LOADERS:
                    elsewhere.append(f"{where(path, call)} {name}")
    assert not unsafe, f"model loads without use_safetensors=True (a pickle .bin would be unpickled): {unsafe}"
    assert not elsewhere, f"model loads outside train/modeling.py's helpers (use them, or list the file with a reason): {elsewhere}"


def test_nothing_saves_pickle_weights():
    bad = []
    for path in sources():
        for call in calls(path):
            name = dotted(call.func)
            if name.endswith("save_pretrained") and is_const(keyword(call, "safe_serialization"), False):
                bad.append(where(path, call))
    assert not bad, f"save_pretrained(safe_serialization=False): {bad}"


def test_every_trust_remote_code_setting_defaults_to_off():
    from gpt2_rlhf.stages import SECTIONS
    from gpt2_rlhf.train.config import section_class

    seen = 0
    for section in SECTIONS:
        for f in dataclasses.fields(section_class(section, SECTIONS)):
            if "trust_remote_code" in f.name:
                seen += 1
                assert f.default is False, f"{section}.{f.name} defaults to {f.default!r}"
    import inspect

    from gpt2_rlhf.train import modeling

    for fn in (modeling.load_tokenizer, modeling.load_causal_lm, modeling.load_sequence_classifier,
               modeling.RewardModel.load):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn.__qualname__


# ----------------------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A saved 1-layer GPT-2 LM with a byte-level BPE tokenizer (safetensors)."""
    import torch

    from gpt2_rlhf.train.base import BaseConfig, build_model, train_tokenizer

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("safe") / "model"
    tok = train_tokenizer(["\n\nHuman: hi there\n\nAssistant: hello, how are you?"] * 8, vocab_size=270)
    torch.manual_seed(0)
    model = build_model(BaseConfig(vocab_size=270, n_layer=1, n_embd=16, n_head=2, n_positions=64), tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_pickle_only_model_folders_are_refused(tiny_model, tmp_path):
    from corpus.builders import pickle_only_model
    from gpt2_rlhf.train.modeling import RewardModel, load_causal_lm, load_sequence_classifier

    bin_dir = pickle_only_model(tiny_model, tmp_path / "bin_only")
    assert (bin_dir / "pytorch_model.bin").is_file() and not list(bin_dir.glob("*.safetensors"))
    for load in (load_causal_lm, load_sequence_classifier, RewardModel.load):
        with pytest.raises(OSError, match=r"only pickle weights \(pytorch_model\.bin\).*safetensors only"):
            load(bin_dir)
    load_causal_lm(tiny_model)  # the same model as safetensors loads


def test_space_loaders_refuse_pickle_weights(tiny_model, tmp_path):
    from corpus.builders import pickle_only_model

    inference = pytest.importorskip("gpt2_rlhf.space.inference")
    bin_dir = pickle_only_model(tiny_model, tmp_path / "bin_only")
    with pytest.raises(OSError, match="bin_only"):
        inference.Policy.load("rlhf", str(bin_dir))
    inference.Policy.load("rlhf", str(tiny_model))


CUSTOM_CODE = '''import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizer
class EvilConfig(PretrainedConfig):
    model_type = "evil_gpt"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
class EvilTokenizer(PreTrainedTokenizer):
    pass
'''


@pytest.fixture
def custom_code_folder(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A model folder whose config and tokenizer point at Python files (auto_map); importing them leaves a marker."""
    import io

    folder, marker = tmp_path / "remote_code_model", tmp_path / "custom_code_ran"
    folder.mkdir()
    auto = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
            "AutoModelForSequenceClassification": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil_gpt", "auto_map": auto}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}))
    (folder / "evil.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    (folder / "model.safetensors").write_bytes(b"")
    # Were a loader to leave trust_remote_code out, transformers would ask on stdin: answer "y" to catch it.
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 20))
    return folder, marker


def _loaders():
    from gpt2_rlhf.space import inference  # part of the package: always importable
    from gpt2_rlhf.train import modeling

    out = {"modeling.load_tokenizer": modeling.load_tokenizer, "modeling.load_causal_lm": modeling.load_causal_lm,
           "modeling.load_sequence_classifier": modeling.load_sequence_classifier,
           "modeling.RewardModel.load": modeling.RewardModel.load, "modeling.saved_context_length": modeling.saved_context_length}
    out.update({"space.load_tokenizer": inference.load_tokenizer,
                "space.Policy.load": lambda p: inference.Policy.load("rlhf", str(p)),
                "space.RewardScorer.load": lambda p: inference.RewardScorer.load(str(p))})
    return out


@pytest.mark.parametrize("name", list(_loaders()))
def test_loaders_refuse_remote_code_without_running_it(name, custom_code_folder):
    folder, marker = custom_code_folder
    with pytest.raises((OSError, ValueError)):
        _loaders()[name](folder)
    assert not marker.exists(), f"{name} ran the folder's custom code"


def test_data_validator_tokenizer_refuses_remote_code(custom_code_folder, capsys):
    from gpt2_rlhf.train.data import validate_command

    folder, marker = custom_code_folder
    code = validate_command(str(ROOT / "tests/corpus/data/long_prompt.jsonl"), tokenizer=str(folder), max_length=64)
    assert code == 1 and "could not load tokenizer" in capsys.readouterr().err
    assert not marker.exists()
