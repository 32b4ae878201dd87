"""The Space served on 127.0.0.1 with tiny models, driven through gradio_client.

One app serves the module (launched in-process); the burst test and `rlhf space`
start their own. Timeouts are generous: the test machine is shared.
"""

from __future__ import annotations

import html
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
            model_1="base", model_2="rlhf", mode="Anchored", follow_up=False):
    """One comparison through the API; a new round first unless `follow_up` (the client's session keeps the
    dialogue, as a browser tab does). Outputs: name A, chat A, score A, name B, chat B, score B, status, id, seed."""
    if not follow_up:
        c.predict(api_name="/new_round")
    return c.predict(prompt, max_new_tokens, temperature, top_p, seed, model_1, model_2, mode, api_name="/compare")


def said(chat) -> str:
    """The last response in a chat pane's value (gradio_client's messages: content is a list of text parts),
    without the surrounding whitespace a chat bubble drops."""
    if not chat:
        return ""
    content = chat[-1]["content"]
    text = "".join(part.get("text", "") for part in content) if isinstance(content, list) else str(content)
    return html.unescape(text).strip()  # the pane shows escaped text: exactly the characters of the response


def records(votes: VoteLog) -> list[dict]:
    return [json.loads(line) for line in votes.path.read_text().splitlines()] if votes.path.exists() else []


def test_compare_returns_both_responses_and_both_scores(served):
    name_a, chat_a, score_a, name_b, chat_b, score_b, status, cid, seed = compare(served.client)
    assert name_a == "**Model A: Base** · run/base" and name_b == "**Model B: PPO** · run/ppo"  # no full paths
    left, right = said(chat_a), said(chat_b)
    assert left and right and left != right and chat_a[0]["role"] == "user"
    assert status.startswith("Done.") and len(cid) == 32 and seed == 3
    # the page shows exactly what the engine computes for these settings, the scale explained, and the length
    prompt, decoding = served.engine.prepare("How do I make tea?", Decoding(12, 0.9, 1.0, 3))
    ref = list(served.engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    assert (left, right) == (ref.left.response.strip(), ref.right.response.strip())
    for line, s in ((score_a, ref.left), (score_b, ref.right)):
        assert line.startswith(f"Reward **{s.reward_normalised:+.3f}** (reward model, in std devs from its mean; ")
        assert line.endswith(f"{len(s.response.split())} word{'s' * (len(s.response.split()) != 1)}, "
                             f"{s.tokens} token{'s' * (s.tokens != 1)}") and s.tokens >= 1


def test_both_sides_stream_at_the_same_time(slow):
    """Two slow scripted models: some update shows both panes partly written before either has finished."""
    job = slow.client.submit("How do I make tea?", 64, 0.0, 1.0, 0, "base", "rlhf", "Anchored", api_name="/compare")
    final = job.result(timeout=TIMEOUT)
    partial = job.outputs()[:-1]
    full = (said(final[1]), said(final[4]))
    assert full == (slow.texts["base"].strip(), slow.texts["rlhf"].strip())
    assert all(o[7] == "" and o[2].startswith("Writing…") and o[5].startswith("Writing…") for o in partial)  # no
    # scores and no vote id yet
    both = [o for o in partial if 0 < len(said(o[1])) < len(full[0]) and 0 < len(said(o[4])) < len(full[1])]
    assert len(both) >= 3, [(said(o[1]), said(o[4])) for o in partial]
    assert all(full[0].startswith(said(o[1])) and full[1].startswith(said(o[4])) for o in partial)
    # (that both finish in about one side's time is tested on the engine, without the web server's overhead)


def test_fresh_seed_per_compare_unless_fixed(served):
    a, b = compare(served.client, seed=None), compare(served.client, seed=None)
    assert a[8] != b[8] and (said(a[1]), said(a[4])) != (said(b[1]), said(b[4]))
    c, d = compare(served.client, seed=21), compare(served.client, seed=21)
    assert c[8] == d[8] == 21 and c[:7] == d[:7] and c[7] != d[7]  # same pair and scores; each its own vote id
    e = compare(served.client, seed=a[8])  # a drawn seed, given back, gives that pair again
    assert (said(e[1]), said(e[4])) == (said(a[1]), said(a[4]))


def test_bad_input_gets_a_friendly_message(served):
    out = compare(served.client, prompt="   ")
    assert out[6] == "Please type a prompt first (for example, a question for the assistant)."
    assert out[7] == "" and out[1] == out[4] == {"__type__": "update"}  # no vote id; the panes stay as they were
    out = compare(served.client, prompt="x" * 100_000)
    assert "100,000 characters long; this Space accepts at most 4,000" in out[6] and out[7] == ""
    assert compare(served.client, model_1="sft", model_2="sft")[6] == "Pick two different models to compare."
    # out-of-range decoding settings are refused by the sliders' bounds, with the bound named
    with pytest.raises(Exception, match="greater than maximum value 256"):
        compare(served.client, max_new_tokens=100_000)
    with pytest.raises(Exception, match="less than minimum value 0"):
        compare(served.client, temperature=-1)
    assert compare(served.client, max_new_tokens=2)[6].startswith("Done.")  # and the Space carries on


def test_blind_by_default_names_and_scores_after_the_vote(served):
    before = len(records(served.votes))
    first = set()
    for seed in range(40):  # random order: both orders show up (all 40 alike: p = 2**-39)
        out = compare(served.client, mode="Blind", seed=seed, max_new_tokens=4, model_1="sft", model_2="rlhf")
        assert (out[0], out[3]) == ("**Model A**", "**Model B**")
        assert out[2].startswith("Score hidden until you vote · ") and out[5].startswith("Score hidden until you vote")
        assert "hidden until you vote" in out[6]
        status, name_a, score_a, name_b, score_b = served.client.predict(out[7], api_name="/vote_left")
        assert status.startswith('Thanks! Your vote "A is better" was recorded. Model A was ')
        rec = records(served.votes)[-1]
        assert rec["id"] == out[7] and rec["vote"] == "left" and rec["anonymised"] is True and rec["turn"] == 1
        assert rec["chosen"].strip() == said(out[1]) and rec["rejected"].strip() == said(out[4])  # A won
        assert name_a.startswith("**Model A: ") and name_a.endswith(display(rec["chosen_model"]))
        assert name_b.endswith(display(rec["rejected_model"]))
        assert score_a.startswith(f"Reward **{rec['left']['reward_normalised']:+.3f}**")
        first.add(rec["left"]["role"])
        if len(first) == 2 and seed >= 2:
            break
    assert first == {"sft", "rlhf"}
    assert len(records(served.votes)) == before + seed + 1
    again = served.client.predict(out[7], api_name="/vote_right")
    assert again[0].startswith("You already voted on this pair")
    assert served.client.predict("", api_name="/vote_tie")[0].startswith("Compare two responses first")
    assert served.client.predict("not-an-id", api_name="/vote_both_bad")[0].startswith("Compare two responses first")
    assert len(records(served.votes)) == before + seed + 1
    # `rlhf votes` keeps these blind votes and leaves anchored ones out by default
    rows, counts = votes_to_preferences(served.votes.path)
    decisive = [r for r in records(served.votes) if r["vote"] in ("left", "right")]
    unusable = sum(v for k, v in counts.items() if k.startswith("skipped_") and k not in ("skipped_not_blind",
                                                                                            "skipped_not_decisive"))
    assert counts["pairs"] + unusable == sum(r["anonymised"] for r in decisive) and counts["pairs"] >= 1
    assert counts["skipped_not_blind"] == sum(not r["anonymised"] for r in decisive)


def display(model_id: str) -> str:
    return "/".join(Path(model_id).parts[-2:])


def test_a_follow_up_continues_each_dialogue_and_the_vote_covers_the_last_turn(served):
    one = compare(served.client, prompt="How do I make tea?", seed=4, max_new_tokens=6)
    two = compare(served.client, prompt="And with milk?", seed=4, max_new_tokens=6, follow_up=True)
    assert [m["role"] for m in two[1]] == ["user", "assistant", "user", "assistant"]
    assert said(two[1][:2]) == said(one[1])  # the first turn stays in the pane
    served.client.predict(two[7], api_name="/vote_right")
    rec = records(served.votes)[-1]
    assert rec["turn"] == 2 and rec["chosen"].strip() == said(two[4])
    first_a = records(served.votes)[-1]["left"]["prompt"].split("\n\nAssistant:")[1].split("\n\nHuman:")[0]
    assert first_a.strip() == said(one[1])
    assert rec["left"]["prompt"] == f"\n\nHuman: How do I make tea?\n\nAssistant:{first_a}\n\nHuman: And with milk?\n\nAssistant:"
    assert rec["left"]["prompt"] != rec["right"]["prompt"]  # each side answered its own dialogue
    # a pair needs one prompt: this vote makes none; after the vote, the next prompt starts a new round
    _, counts = votes_to_preferences(served.votes.path, blind_only=False)  # (this one was anchored)
    assert counts["skipped_different_context"] >= 1
    three = compare(served.client, prompt="Hello", seed=4, max_new_tokens=6, follow_up=True)
    assert [m["role"] for m in three[1]] == ["user", "assistant"]


def test_the_sides_are_picked_among_the_runs_models(tmp_path):
    run = make_run(tmp_path / "run", extra=("dpo", "rloo"))
    engine = Engine.load(ModelSources.from_run_dir(run), device="cpu")
    assert engine.roles == ["base", "sft", "rlhf", "dpo", "rloo"] and engine.default_pair == ("rlhf", "sft")
    demo, url = launch(engine, VoteLog(tmp_path / "votes.jsonl"))
    c = client(url)
    try:
        dropdowns = [x for x in demo.get_config_file()["components"] if x.get("props", {}).get("elem_id") == "model_1"]
        assert [ch[1] for ch in dropdowns[0]["props"]["choices"]] == ["base", "sft", "rlhf", "dpo", "rloo"]
        out = compare(c, model_1="dpo", model_2="rloo", max_new_tokens=4)
        assert out[0] == "**Model A: DPO** · run/dpo" and out[3] == "**Model B: RLOO** · run/rloo"
        assert out[6].startswith("Done.")
        with pytest.raises(Exception, match="not in the list of choices"):
            compare(c, model_1="critic")
    finally:
        c.close()
        demo.close()


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
        assert out[0].startswith("**Model A: Base") and out[3].startswith("**Model B: PPO") and out[6].startswith("Done.")
        assert out[2].startswith("Reward **") and out[5].startswith("Reward **") and len(out[7]) == 32


def test_200_concurrent_votes_make_200_valid_records(served):
    # 200 finished comparisons waiting for votes (one real comparison, 200 ids)
    prompt, decoding = served.engine.prepare("Vote on me", Decoding(4, 0.9, 1.0, 1))
    ref = list(served.engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    side = lambda s, i: {"role": s.role, "model": s.model_id, "response": f"{s.response} {s.role} #{i}",  # noqa: E731
                         "reward": s.reward, "reward_normalised": s.reward_normalised}
    ids = [served.pending.add({"prompt": prompt, "anonymised": True, "reward_model": "rm",
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
        out = compare(c, model_1="sft", max_new_tokens=4)
        assert out[0] == "**Model A: SFT** · run/sft" and out[6].startswith("Done.")
        assert c.predict(out[7], api_name="/vote_right")[0].startswith("Thanks!")
        c.close()
        assert json.loads(votes.read_text())["chosen"].strip() == said(out[4])
        assert launched["css"]  # the compact layout
    finally:
        launched["demo"].close()


def test_rlhf_space_refuses_an_unfinished_run(tmp_path, capsys):
    from gpt2_rlhf.cli import main

    run = tmp_path / "run"
    (run / "base").mkdir(parents=True)
    assert main(["space", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf space: error:") and "ppo: missing or unfinished" in err and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == ["base"]  # nothing written


def test_rlhf_space_names_a_missing_run_directory_and_a_busy_port(served, tmp_path, capsys, monkeypatch):
    """Both fail at once, before any model loads, in one line naming what to fix."""
    import socket

    from gpt2_rlhf.cli import main
    from gpt2_rlhf.space.inference import Engine as SpaceEngine

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded")

    monkeypatch.setattr(SpaceEngine, "load", no_loading)
    assert main(["space", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"rlhf space: error: run directory {tmp_path / 'nowhere'} does not exist "
                   f"(make one with `rlhf run --output-dir {tmp_path / 'nowhere'}`)")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.perf_counter()
        assert main(["space", str(served.run), "--port", str(port)]) == 2
        assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err.strip()
    assert err == (f"rlhf space: error: --port {port}: 127.0.0.1:{port} is already in use; "
                   "pass a free port with --port")


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
    assert sorted(reqs) == ["huggingface_hub", "torch", "transformers"]  # `spaces` comes with ZeroGPU hardware
    assert "rlhf space" in text
    from huggingface_hub import SpaceHardware

    assert meta["suggested_hardware"] == SpaceHardware.ZERO_A10G.value  # free for a Gradio Space


def test_demo_from_env_builds_the_hub_space(served, tmp_path, monkeypatch):
    """What `python app.py` does on the Hub: models from the Space variables (local paths work as ids), the
    run's headline and examples from run_info.json beside app.py."""
    from gpt2_rlhf.space.app import RUN_INFO, demo_from_env

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / RUN_INFO).write_text(json.dumps({"headline": ["PPO beats SFT on gold: measured."],
                                               "examples": ["Held-out prompt one?"],
                                               "card_url": "https://huggingface.co/alice/tiny"}))
    env = {"RLHF_BASE_ID": str(served.run / "base"), "RLHF_POLICY_ID": str(served.run / "ppo"),
           "RLHF_REWARD_ID": str(served.run / "reward"), "RLHF_MAX_NEW_TOKENS": "32", "RLHF_CONCURRENCY": "3"}
    demo = demo_from_env(env, folder=folder)
    config = demo.get_config_file()
    props = lambda key, value: [c["props"] for c in config["components"] if c.get("props", {}).get(key) == value]  # noqa: E731
    assert props("label", "Max new tokens")[0]["maximum"] == 32
    assert [ch[1] for ch in props("elem_id", "model_1")[0]["choices"]] == ["base", "rlhf"]  # no SFT variable
    header = props("elem_id", "header")[0]["value"]
    assert "[Model card](https://huggingface.co/alice/tiny): PPO beats SFT on gold: measured." in header
    assert "run/ppo" in header and str(served.run) not in header  # a local id shown short, never its full path
    assert any(c.get("props", {}).get("label", "").startswith("Example prompts (held out")
               for c in config["components"])
    compare_fn = [f for f in demo.fns.values() if f.api_name == "compare"][0]
    assert compare_fn.concurrency_limit == 3 and demo._queue.max_size == 256
    with pytest.raises(ValueError, match="RLHF_REWARD_ID .* and at least two of RLHF_BASE_ID, RLHF_SFT_ID, "
                                         "RLHF_POLICY_ID, RLHF_DPO_ID, RLHF_RLOO_ID \\(have: RLHF_BASE_ID\\)"):
        demo_from_env({"RLHF_BASE_ID": "x"})


def test_generation_runs_under_zero_gpu_when_spaces_is_there(served, monkeypatch):
    """On ZeroGPU the `spaces` package is installed and spaces.GPU lends the device per call; elsewhere
    (here: no such package) the function is left as it is."""
    import types

    from gpt2_rlhf.space import app

    assert app.spaces is None and app.zero_gpu(len) is len
    calls = []

    def GPU(duration=None):
        def wrap(fn):
            def on_gpu(*args, **kwargs):
                calls.append(duration)
                yield from fn(*args, **kwargs)
            return on_gpu
        return wrap

    monkeypatch.setattr(app, "spaces", types.SimpleNamespace(GPU=GPU))
    demo, url = launch(served.engine, None)
    c = client(url)
    try:
        out = compare(c, max_new_tokens=3)
    finally:
        c.close()
        demo.close()
    assert out[6].startswith("Done.") and calls == [app.ZERO_GPU_SECONDS]


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """Two scripted models at SLOW_STEP_S a token, served: slow enough to watch both sides stream."""
    from gpt2_rlhf.space.inference import Policy, RewardScorer
    from space_helpers import ScriptedLM, make_tokenizer

    root = tmp_path_factory.mktemp("space_slow")
    run = make_run(root / "run", sft=False)
    tok = make_tokenizer()
    texts = {"base": " Boil the water first, then add the tea.", "rlhf": " Warm the pot, add leaves and wait."}
    policies = {role: Policy(role, f"scripted/{role}", ScriptedLM(tok(t, add_special_tokens=False)["input_ids"],
                                                                 len(tok), tok.eos_token_id, delay_s=SLOW_STEP_S), tok)
                for role, t in texts.items()}
    engine = Engine(policies, RewardScorer.load(str(run / "reward")))
    demo, url = launch(engine, None)
    c = client(url)
    yield SimpleNamespace(client=c, texts=texts)
    c.close()
    demo.close()


SLOW_STEP_S = 0.08
