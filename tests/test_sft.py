"""Stage 1 (SFT): completion-only loss, held-out NLL maths, device settings, resume, multi-process, offline data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.train.hf_training import device_settings
from gpt2_rlhf.train.sft import token_nll

from conftest import copy_run
from trainer_callbacks import CountSteps, CrashAt

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- maths


def test_token_nll_by_hand():
    # B=1, T=3, V=2. Position 0 predicts labels[1], position 1 predicts labels[2]; position 2 predicts nothing.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    total, count = token_nll(logits, labels)
    # -log softmax([0,0])[1] = log 2 ; -log softmax([log3, 0])[0] = -log(3/4)
    assert count.item() == 2
    assert total.item() == pytest.approx(math.log(2.0) + math.log(4.0 / 3.0), abs=1e-6)
    # a masked label contributes nothing
    total2, count2 = token_nll(logits, torch.tensor([[-100, -100, 0]]))
    assert count2.item() == 1 and total2.item() == pytest.approx(math.log(4.0 / 3.0), abs=1e-6)


def test_device_settings_cpu_turns_bf16_and_checkpointing_off(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = device_settings("auto", gradient_checkpointing=True)
    assert s["use_cpu"] and not s["bf16"] and not s["activation_checkpointing"] and s["report_to"] == "none"
    assert not device_settings("bf16")["bf16"]  # never bf16 on CPU


def test_device_settings_gpu_uses_bf16_when_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    s = device_settings("auto", gradient_checkpointing=True)
    assert s["bf16"] and not s["use_cpu"] and s["activation_checkpointing"]
    assert not device_settings("fp32")["bf16"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not device_settings("auto")["bf16"]


# ----------------------------------------------------------------------------- the trainer's batches


def test_only_completion_tokens_carry_loss(micro_run, micro_recipe, tmp_path):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.sft import build_trainer

    base = micro_run / "base"
    tok, model = load_tokenizer(base), load_causal_lm(base)
    rows = [
        {"prompt": "\n\nHuman: How do I grow tomatoes?\n\nAssistant:", "chosen": " Water them deeply.", "rejected": " No."},
        {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tips for sleep?\n\nAssistant:",
         "chosen": " Keep a regular bedtime and a dark, cool room.", "rejected": " No."},
    ]
    trainer = build_trainer(micro_recipe, model, tok, rows, None, tmp_path / "ckpt", max_length=128)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, row in enumerate(rows):
        prompt_ids = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        completion_ids = tok(row["prompt"] + row["chosen"], add_special_tokens=False)["input_ids"][len(prompt_ids):]
        n = len(prompt_ids) + len(completion_ids) + 1  # + EOS
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        assert ids[:len(prompt_ids)].tolist() == prompt_ids
        assert (labels[:len(prompt_ids)] == -100).all(), "prompt tokens must not carry loss"
        assert labels[len(prompt_ids):n].tolist() == completion_ids + [tok.eos_token_id], "completion + EOS carry loss"
        assert (labels[n:] == -100).all() and (mask[n:] == 0).all() and (ids[n:] == tok.pad_token_id).all()
        assert mask[:n].all()


# ----------------------------------------------------------------------------- the stage


def test_micro_sft_learns_and_records_metrics(micro_run):
    from safetensors.torch import load_file

    sft = micro_run / "sft"
    m = json.loads((sft / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "eval_perplexity", "base_eval_loss", "samples_per_second", "seconds"):
        assert m[key] is not None and math.isfinite(m[key]), key
    assert m["eval_perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
    assert m["eval_loss"] < m["base_eval_loss"], "SFT must lower the held-out NLL of chosen responses"
    assert m["global_step"] == 6 and m["world_size"] == 1
    curve = [p["loss"] for p in m["loss_curve"]]
    assert len(curve) >= 2 and curve[-1] < curve[0]
    base_w, sft_w = load_file(micro_run / "base/model.safetensors"), load_file(sft / "model.safetensors")
    assert not torch.equal(base_w["transformer.h.0.mlp.c_fc.weight"], sft_w["transformer.h.0.mlp.c_fc.weight"])
    assert not (sft / "checkpoints").exists() and (sft / "tokenizer.json").exists()
    assert not (micro_run / "sft.partial").exists()



def test_interrupted_sft_resumes_from_its_checkpoint(micro_run, micro_recipe, tmp_path):
    from gpt2_rlhf.train import sft

    run = copy_run(micro_run, tmp_path / "run", stages=("base",))
    micro_recipe.sft.max_steps, micro_recipe.sft.save_steps = 4, 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        sft.main(micro_recipe, run, callbacks=[CrashAt(3)])
    assert not (run / "sft").exists()
    assert (run / "sft.partial/checkpoints/checkpoint-2").is_dir()

    counter = CountSteps()
    final = sft.main(micro_recipe, run, resume=True, callbacks=[counter])
    m = json.loads((final / "metrics.json").read_text())
    assert counter.steps == [3, 4], "the resumed run continues at step 3, it does not start over"
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4
    assert (final / "COMPLETE").exists() and not (run / "sft.partial").exists()


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gpt2_rlhf.cli"],
    # `accelerate launch --multi_gpu --num_processes 2` goes through the same torch.distributed launch (on a
    # machine without GPUs our code picks gloo); it is tested on PPO (test_ppo_trainer.py), which also
    # builds its own Accelerator. (`--cpu --num_processes 2` starts ONE process: accelerate's multi-CPU
    # launcher needs mpirun.)
], ids=["torchrun"])
def test_two_process_cpu_sft(micro_run, tmp_path, launcher):
    run = copy_run(micro_run, tmp_path / "run", stages=("base",))
    cmd = [sys.executable, *launcher, "sft", "--config", "micro", "--output-dir", str(run),
           "--sft.max_steps", "2", "--sft.max_eval_samples", "4"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "sft/metrics.json").read_text())
    assert m["world_size"] == 2 and m["global_step"] == 2 and math.isfinite(m["eval_loss"])
    assert sorted(p.name for p in run.iterdir()) == ["base", "recipe.yaml", "sft"]  # no stray partial dir


def test_real_recipe_has_the_seed_card_hyperparameters():
    from gpt2_rlhf.stages import load_recipe

    r = load_recipe("gpt2-hh")
    assert r.base.model == "gpt2" and r.data.dataset == "Anthropic/hh-rlhf"
    assert r.sft.learning_rate == 5e-5 and r.reward.learning_rate == 1e-5


def test_real_recipe_sft_offline_fails_in_one_line_naming_the_dataset(micro_run, tmp_path):
    run = copy_run(micro_run, tmp_path / "run", stages=("base",))
    proc = subprocess.run([sys.executable, "-m", "gpt2_rlhf.cli", "sft", "--config", str(ROOT / "configs/gpt2-hh.yaml"),
                           "--output-dir", str(run)], env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rlhf sft: error")]
    assert len(lines) == 1 and "Anthropic/hh-rlhf" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["base", "recipe.yaml"]  # nothing written
