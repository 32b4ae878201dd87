"""A real browser on the Space: Playwright drives Debian's chromium (installed by .ci/run).

It types a prompt, compares, reads both responses and both scores from the page,
checks that HTML in the prompt and in a response stays text, votes, and keeps a
screenshot in $RLHF_ARTIFACTS (or the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from gpt2_rlhf.space.inference import Engine, Policy, RewardScorer
from gpt2_rlhf.space.votes import VoteLog
from space_helpers import ScriptedLM, free_port, make_run

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
# What the scripted "RLHF model" answers: markup that would run if the page rendered responses as HTML.
HOSTILE_RESPONSE = ' <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'  # < 64 tokens
TIMEOUT_MS = 180_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is absent (.ci/run installs it: apt-get install chromium)"),
]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gpt2_rlhf.space.app import build_demo

    run = make_run(tmp_path / "run", sft=False)
    base = Policy.load("base", str(run / "base"))
    tok = base.tokenizer
    script = tok(HOSTILE_RESPONSE, add_special_tokens=False)["input_ids"]
    rlhf = Policy("rlhf", "scripted/html-writer", ScriptedLM(script, len(tok), tok.eos_token_id), tok)
    engine = Engine({"base": base, "rlhf": rlhf}, RewardScorer.load(str(run / "reward")))
    votes = VoteLog(tmp_path / "votes.jsonl")
    demo = build_demo(engine, votes)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    yield f"http://127.0.0.1:{port}/", votes
    demo.close()


def test_browser_compare_and_vote(app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, votes = app
    artifacts = Path(os.environ.get("RLHF_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    prompt = '<b>hi</b><img src=y onerror="window.__pwned=3"> How do I make tea?'
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#compare").click()
            status = page.locator("#status textarea")
            expect(status).to_have_value(re.compile(r"^Done\."), timeout=TIMEOUT_MS)

            left = page.locator("#left_response textarea").input_value()
            right = page.locator("#right_response textarea").input_value()
            assert left.strip() and right == HOSTILE_RESPONSE  # shown as the literal text
            assert page.locator("#left_name textarea, #left_name input").first.input_value().startswith("Base · ")
            scores = [float(page.locator(f"#{side}_score input").input_value()) for side in ("left", "right")]
            assert all(map(lambda s: s == s, scores))  # two real numbers (not NaN)
            # nothing from the prompt or the response became markup, nothing ran
            assert page.evaluate("window.__pwned") is None
            assert page.locator("img[src='x'], img[src='y']").count() == 0
            assert page.locator("#prompt textarea").input_value() == prompt
            page.screenshot(path=str(artifacts / "space_compare.png"), full_page=True)

            page.locator("#vote_left").click()
            expect(status).to_have_value(re.compile(r"^Thanks! Your vote \"Left is better\" was recorded"),
                                         timeout=TIMEOUT_MS)
            page.screenshot(path=str(artifacts / "space_voted.png"), full_page=True)
        finally:
            browser.close()
    rec = [json.loads(line) for line in votes.path.read_text().splitlines()]
    assert len(rec) == 1 and rec[0]["vote"] == "left"
    assert rec[0]["chosen"] == left and rec[0]["rejected"] == HOSTILE_RESPONSE
    assert rec[0]["rejected_model"] == "scripted/html-writer"
    assert rec[0]["prompt"] == f"\n\nHuman: {prompt}\n\nAssistant:"
    assert (artifacts / "space_compare.png").stat().st_size > 10_000
    if artifacts != tmp_path:  # keep a copy with the test's other outputs too
        shutil.copy(artifacts / "space_voted.png", tmp_path / "space_voted.png")
