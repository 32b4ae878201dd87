"""The Space served on 127.0.0.1 with tiny models, driven through gradio_client.

One app serves the module (launched in-process); the burst test and `rlhf space`
start their own. Timeouts are generous: the test machine is shared.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from gpt2_rlhf.space.inference import Decoding, Engine, ModelSources
from gpt2_rlhf.space.votes import SCHEMA, PendingComparisons, VoteLog, votes_to_preferences
from space_helpers import free_port, make_run

from gradio_client import Client
from gradio_client.utils import QueueError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def launch(engine, votes, **kwargs):
    from gpt2_rlhf.space.app import build_demo

    demo = build_demo(engine, votes, **kwargs)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    return demo, f"http://127.0.0.1:{port}/"


def client(url, workers=40):
    # ssl_verify=False: plain http on localhost; otherwise every request builds a TLS
    # context with the CA bundle, which costs more CPU than the request itself.
    return Client(url, verbose=False, analytics_enabled=False, max_workers=workers, ssl_verify=False,
                  httpx_kwargs={"timeout": TIMEOUT})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        root = tmp_path_factory.mktemp("space_app")
        run = make_run(root / "run")
        engine = Engine.load(ModelSources.from_run_dir(run), device="cpu")
        votes = VoteLog(root / "votes" / "votes.jsonl")
        pending = PendingComparisons()
        demo, url = launch(engine, votes, concurrency=2, max_queue=256, pending=pending)
        c = client(url)
        yield SimpleNamespace(run=run, engine=engine, votes=votes, pending=pending, url=url, client=c)
        c.close()
        demo.close()


def compare(c, prompt="How do I make tea?", max_new_tokens=12, temperature=0.9, top_p=1.0, seed=3,
            opponent="base", anonymise=False):
    return c.predict(prompt, max_new_tokens, temperature, top_p, seed, opponent, anonymise, api_name="/compare")


def records(votes: VoteLog) -> list[dict]:
    return [json.loads(line) for line in votes.path.read_text().splitlines()] if votes.path.exists() else []


def test_compare_returns_both_responses_and_both_scores(served):
    left_name, left, left_score, right_name, right, right_score, status, cid = compare(served.client)
    assert left_name.startswith("Base · ") and left_name.endswith("base")
    assert right_name.startswith("RLHF · ") and right_name.endswith("ppo")
    assert isinstance(left, str) and isinstance(right, str) and left and right and left != right
    assert status.startswith("Done.") and len(cid) == 32
    # the page shows exactly what the engine computes for these settings
    prompt, decoding = served.engine.prepare("How do I make tea?", Decoding(12, 0.9, 1.0, 3))
    ref = list(served.engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    assert (left, right) == (ref.left.response, ref.right.response)
    assert (left_score, right_score) == (round(ref.left.reward_normalised, 4), round(ref.right.reward_normalised, 4))


def test_both_sides_stream(served):
    job = served.client.submit("How do I make tea?", 12, 0.0, 1.0, 0, "sft", False, api_name="/compare")
    final = job.result(timeout=TIMEOUT)
    outputs = job.outputs()
    assert len(outputs) >= 4  # partial updates before the final one
    assert final[0].startswith("SFT · ")
    partial = outputs[:-1]
    assert all(o[2] is None and o[5] is None and o[7] == "" for o in partial)  # no scores, no vote id yet
    assert any(o[1] and not o[4] for o in partial)  # left streamed while right was still empty
    assert any(o[4] and o[4] != final[4] for o in partial)  # right streamed too
    assert all(final[1].startswith(o[1]) and final[4].startswith(o[4]) for o in partial)


def test_same_seed_same_pair(served):
    a, b = compare(served.client, seed=21), compare(served.client, seed=21)
    assert a[:7] == b[:7] and a[7] != b[7]  # same pair and scores; each comparison gets its own vote id
    c = compare(served.client, seed=22)
    assert (c[1], c[4]) != (a[1], a[4])


def test_bad_input_gets_a_friendly_message(served):
    out = compare(served.client, prompt="   ")
    assert out[6] == "Please type a prompt first (for example, a question for the assistant)."
    assert out[1] == out[4] == out[7] == "" and out[2] is None
    out = compare(served.client, prompt="x" * 100_000)
    assert "100,000 characters long; this Space accepts at most 4,000" in out[6] and out[7] == ""
    # out-of-range decoding settings are refused by the sliders' bounds, with the bound named
    with pytest.raises(Exception, match="greater than maximum value 256"):
        compare(served.client, max_new_tokens=100_000)
    with pytest.raises(Exception, match="less than minimum value 0"):
        compare(served.client, temperature=-1)
    assert compare(served.client, max_new_tokens=2)[6].startswith("Done.")  # and the Space carries on


def test_votes_anonymised_arena_mode(served):
    before = len(records(served.votes))
    names = set()
    for seed in range(40):  # random order: both orders show up (all 40 alike: p = 2**-39)
        out = compare(served.client, anonymise=True, seed=seed, max_new_tokens=4)
        assert (out[0], out[3]) == ("Model A", "Model B") and out[2] is None and out[5] is None
        assert "hidden until you vote" in out[6]
        status, left_name, right_name, left_score, right_score = served.client.predict(out[7], api_name="/vote_left")
        assert status.startswith('Thanks! Your vote "Left is better" was recorded. Left was ')
        assert isinstance(left_score, float) and isinstance(right_score, float)
        rec = records(served.votes)[-1]
        assert rec["id"] == out[7] and rec["vote"] == "left" and rec["anonymised"] is True
        assert rec["chosen"] == out[1] and rec["rejected"] == out[4]  # what was shown on the left won
        assert left_name.endswith(rec["chosen_model"]) and right_name.endswith(rec["rejected_model"])
        assert round(rec["left"]["reward_normalised"], 4) == left_score
        names.add(rec["left"]["role"])
        if len(names) == 2 and seed >= 2:
            break
    assert names == {"base", "rlhf"}
    assert len(records(served.votes)) == before + seed + 1
    again = served.client.predict(out[7], api_name="/vote_right")
    assert again[0].startswith("You already voted on this pair")
    assert served.client.predict("", api_name="/vote_tie")[0].startswith("Compare two responses first")
    assert served.client.predict("not-an-id", api_name="/vote_both_bad")[0].startswith("Compare two responses first")
    assert len(records(served.votes)) == before + seed + 1


def test_twenty_concurrent_clients(served):
    with ThreadPoolExecutor(4) as pool:
        clients = list(pool.map(lambda _: client(served.url), range(20)))
    barrier = threading.Barrier(20)

    def one(i):
        barrier.wait(TIMEOUT)
        return compare(clients[i], prompt=f"Question number {i}?", seed=i, max_new_tokens=8)

    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(one, range(20)))
    finally:
        for c in clients:
            c.close()
    assert len(results) == 20
    for out in results:
        assert out[0].startswith("Base") and out[3].startswith("RLHF") and out[6].startswith("Done.")
        assert isinstance(out[2], float) and isinstance(out[5], float) and len(out[7]) == 32


def test_200_concurrent_votes_make_200_valid_records(served):
    # 200 finished comparisons waiting for votes (one real comparison, 200 ids)
    prompt, decoding = served.engine.prepare("Vote on me", Decoding(4, 0.9, 1.0, 1))
    ref = list(served.engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    side = lambda s, i: {"role": s.role, "model": s.model_id, "response": f"{s.response} {s.role} #{i}",  # noqa: E731
                         "reward": s.reward, "reward_normalised": s.reward_normalised}
    ids = [served.pending.add({"prompt": prompt, "anonymised": False, "reward_model": "rm",
                               "decoding": {"max_new_tokens": 4, "temperature": 0.9, "top_p": 1.0, "seed": 1},
                               "left": side(ref.left, i), "right": side(ref.right, i)}) for i in range(200)]
    choices = ["left", "right", "tie", "both_bad"]
    before = len(records(served.votes))
    c = client(served.url, workers=200)
    try:
        jobs = [c.submit(cid, api_name=f"/vote_{choices[i % 4]}") for i, cid in enumerate(ids)]
        results = [j.result(timeout=TIMEOUT) for j in jobs]
    finally:
        c.close()
    assert all(r[0].startswith("Thanks! Your vote") for r in results)
    lines = served.votes.path.read_text().splitlines()[before:]
    assert len(lines) == 200
    recs = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert all(r["schema"] == SCHEMA for r in recs)
    assert sorted(r["id"] for r in recs) == sorted(ids)
    by_id = {r["id"]: r for r in recs}
    for i, cid in enumerate(ids):
        r = by_id[cid]
        assert r["vote"] == choices[i % 4] and r["left"]["response"].endswith(f"#{i}")
        if r["vote"] == "left":
            assert r["chosen"] == r["left"]["response"] and r["rejected"] == r["right"]["response"]
    rows, counts = votes_to_preferences(served.votes.path)
    assert counts["votes"] == before + 200 and counts["vote_tie"] >= 50 and counts["vote_both_bad"] >= 50
    assert sum(row["chosen"].endswith(tuple(f"#{i}" for i in range(200))) for row in rows) == 100


def test_hostile_prompts_are_text_and_the_vote_file_stays_valid(served):
    nasty = "<script>alert('x')</script><img src=x onerror=alert(1)>\x00\x07\x1b[2J\u202e done"
    out = compare(served.client, prompt=nasty, max_new_tokens=4)
    assert out[6].startswith("Done.")
    served.client.predict(out[7], api_name="/vote_right")
    rec = records(served.votes)[-1]
    assert rec["prompt"] == "\n\nHuman: <script>alert('x')</script><img src=x onerror=alert(1)>[2J\u202e done\n\nAssistant:"
    for line in served.votes.path.read_bytes().splitlines():
        assert json.loads(line)["schema"] == SCHEMA and line.isascii()


def test_burst_of_500_requests_leaves_the_space_responsive(tmp_path, served):
    votes = VoteLog(tmp_path / "votes.jsonl")
    demo, url = launch(served.engine, votes, concurrency=1, max_queue=16)
    prompts = ["x" * 100_000, "<script>alert(1)</script>", "\x00\x1b[31m hi", "How do I make tea?", ""]
    c = client(url, workers=100)
    try:
        jobs = [c.submit(prompts[i % len(prompts)], 1, 0.9, 1.0, i, "base", False, api_name="/compare")
                for i in range(500)]
        done = full = 0
        for j in jobs:
            try:
                out = j.result(timeout=TIMEOUT)
                assert isinstance(out[6], str) and out[6]
                done += 1
            except QueueError:
                full += 1
        assert done + full == 500 and done > 0 and full > 0  # bounded: excess refused, never crashed
        t0 = time.time()
        assert httpx.get(url, timeout=30).status_code == 200
        out = compare(c, max_new_tokens=2)
        assert out[6].startswith("Done.") and time.time() - t0 < 60
        c.predict(out[7], api_name="/vote_left")
    finally:
        c.close()
        demo.close()
    assert [json.loads(line)["id"] for line in votes.path.read_text().splitlines()] == [out[7]]


def test_rlhf_space_serves_a_run_directory(served, tmp_path, monkeypatch):
    """`rlhf space RUN_DIR --port N --votes FILE`, as the README shows it, through the real CLI.

    In-process (a second Python with torch and gradio costs a minute of CPU on the
    shared test machine): only `launch` is wrapped so that it returns instead of
    blocking; everything else, the port included, is what the command does.
    """
    import gradio as gr

    from gpt2_rlhf.cli import main

    launched = {}
    real_launch = gr.Blocks.launch

    def launch_and_return(self, **kwargs):
        launched.update(kwargs, demo=self)
        return real_launch(self, **{**kwargs, "prevent_thread_lock": True, "quiet": True})

    monkeypatch.setattr(gr.Blocks, "launch", launch_and_return)
    port = free_port()
    votes = tmp_path / "v" / "votes.jsonl"
    assert main(["space", str(served.run), "--port", str(port), "--votes", str(votes)]) == 0
    try:
        assert (launched["server_name"], launched["server_port"]) == ("127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/"
        assert httpx.get(url, timeout=30).status_code == 200
        c = client(url)
        out = compare(c, opponent="sft", max_new_tokens=4)
        assert out[0].startswith("SFT · ") and out[0].endswith("sft") and out[6].startswith("Done.")
        assert c.predict(out[7], api_name="/vote_right")[0].startswith("Thanks!")
        c.close()
        assert json.loads(votes.read_text())["chosen"] == out[4]
    finally:
        launched["demo"].close()


def test_rlhf_space_refuses_an_unfinished_run(tmp_path, capsys):
    from gpt2_rlhf.cli import main

    run = tmp_path / "run"
    (run / "base").mkdir(parents=True)
    assert main(["space", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf space: error:") and "base" in err and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == ["base"]  # nothing written


def test_space_folder_metadata():
    import gradio

    text = (ROOT / "space" / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["app_file"] == "app.py" and meta["license"] == "mit" and meta["models"]
    assert (ROOT / "space" / meta["app_file"]).is_file()
    reqs = [line.split("=")[0].split(">")[0].split("<")[0].strip()
            for line in (ROOT / "space" / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(reqs) == ["huggingface_hub", "torch", "transformers"]
    assert "rlhf space" in text


def test_demo_from_env_builds_the_hub_space(served, tmp_path, monkeypatch):
    """What `python app.py` does on the Hub: models from the Space variables (local paths work as ids)."""
    from gpt2_rlhf.space.app import demo_from_env

    monkeypatch.chdir(tmp_path)
    env = {"RLHF_BASE_ID": str(served.run / "base"), "RLHF_POLICY_ID": str(served.run / "ppo"),
           "RLHF_REWARD_ID": str(served.run / "reward"), "RLHF_MAX_NEW_TOKENS": "32", "RLHF_CONCURRENCY": "3"}
    demo = demo_from_env(env)
    config = demo.get_config_file()
    sliders = [c for c in config["components"] if c.get("props", {}).get("label") == "Max new tokens"]
    assert sliders and sliders[0]["props"]["maximum"] == 32
    radios = [c for c in config["components"] if c.get("props", {}).get("label") == "Compare RLHF with"]
    assert radios[0]["props"]["visible"] is False  # no SFT variable: base only
    compare_fn = [f for f in demo.fns.values() if f.api_name == "compare"][0]
    assert compare_fn.concurrency_limit == 3 and demo._queue.max_size == 256
    with pytest.raises(ValueError, match="RLHF_POLICY_ID"):
        demo_from_env({"RLHF_BASE_ID": "x", "RLHF_REWARD_ID": "y"})
