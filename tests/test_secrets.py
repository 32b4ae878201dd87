"""Secrets: a Hugging Face token set in the environment appears in no file, log line or upload.

The whole pipeline runs through the real CLI, with debug logging, a fake token in
HF_TOKEN and HF_ENDPOINT pointing at the local Hub stand-in (tests/hub_stub.py,
the real HfApi over HTTP):

1. `rlhf -v run --config micro` (base, SFT, reward model, PPO, evaluation);
2. `rlhf -v card` (the model card);
3. `rlhf -v push` of the policy, base, SFT and reward models and the Space.

Then every file under the test's folder (the run directory, HF_HOME and its
caches, anything else written there), every line the three commands printed, and
every file the stand-in received are searched for the token, and for any 12
consecutive characters of it (a truncated or partly masked copy). A canary file
proves the search finds what it looks for.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_stub import HubStub

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_" + "".join(random.Random(20240601).choices(string.ascii_letters + string.digits, k=34))
PIECES = [TOKEN[i:i + 12] for i in range(len(TOKEN) - 11)]


def leaks(data: bytes | str) -> list[str]:
    """The token pieces found in `data` (empty when clean)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [p for p in PIECES if p in text]


def files_with_token(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and leaks(p.read_bytes())]


def test_the_search_finds_a_planted_token(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "canary.bin").write_bytes(b"\x00\x01 Bearer " + TOKEN[5:20].encode() + b"\xff")
    (tmp_path / "clean.txt").write_text("hf_" + "x" * 34)
    assert files_with_token(tmp_path) == ["a/b/canary.bin"]
    assert leaks("Authorization: Bearer " + TOKEN) and not leaks("hf_***" + TOKEN[-4:])


@pytest.mark.slow
def test_the_token_appears_nowhere(tmp_path):
    out, hf_home = tmp_path / "run", tmp_path / "hf_home"
    with HubStub(token=TOKEN) as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
        env.update(HF_TOKEN=TOKEN, HF_HOME=str(hf_home), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1",
                   PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                   MPLCONFIGDIR=str(tmp_path / "mpl"))
        commands = [
            ["-v", "run", "--config", "micro", "--output-dir", str(out)],
            ["-v", "card", str(out)],
            ["-v", "push", str(out), "--repo-id", "alice/gpt2-rlhf", "--sft-repo-id", "alice/gpt2-rlhf-sft",
             "--reward-repo-id", "alice/gpt2-rlhf-rm", "--base-repo-id", "alice/gpt2-rlhf-base",
             "--space", "alice/gpt2-rlhf-demo"],
        ]
        logs = []
        for argv in commands:
            proc = subprocess.run([sys.executable, "-m", "gpt2_rlhf.cli", *argv], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
            logs.append(proc.stdout + proc.stderr)
            assert proc.returncode == 0, f"rlhf {argv[1]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}"

    # the pipeline did run, and the push reached the stand-in (which takes writes only with this token as Bearer,
    # so the token was read from HF_TOKEN and sent)
    for stage in ("base", "sft", "reward", "ppo", "eval", "card"):
        assert (out / stage).is_dir(), stage
    pushed = {c.repo_id: c.files for c in hub.commits}
    assert set(pushed) == {"alice/gpt2-rlhf", "alice/gpt2-rlhf-sft", "alice/gpt2-rlhf-rm", "alice/gpt2-rlhf-base",
                           "alice/gpt2-rlhf-demo", "alice/gpt2-rlhf-eval-samples"}
    assert "model.safetensors" in pushed["alice/gpt2-rlhf"] and "README.md" in pushed["alice/gpt2-rlhf"]
    lines = [ln for log in logs for ln in log.splitlines()]
    assert len(lines) > 50 and any(" DEBUG " in ln for ln in lines), "debug logging was on"

    # the token: in no file written anywhere under tmp_path, no log line, no uploaded file
    assert files_with_token(tmp_path) == []
    assert [ln for ln in lines if leaks(ln)] == []
    assert [f"{repo}/{name}" for repo, files in pushed.items() for name, data in files.items() if leaks(data)] == []
    assert not (hf_home / "token").exists(), "nothing may save the token"
