"""A real browser on the Space: Playwright drives Debian's chromium (installed by .ci/run).

The blind flow as a voter meets it, on a laptop (1366x768) and a phone (390x844):
type a prompt, Compare, watch both panes stream at the same time (both hold part of
their text before either has finished), vote, see the names and scores revealed next
to the buttons, which disable. Two slow scripted models make the streaming visible;
one answers with markup that would run if the page rendered responses as HTML. The
screenshots stay in $RLHF_ARTIFACTS (or the test's tmp_path) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpt2_rlhf.space.inference import Engine, Policy, RewardScorer
from gpt2_rlhf.space.votes import VoteLog
from space_helpers import ScriptedLM, free_port, make_run

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
# What the scripted base model answers: markup that would run if the page rendered responses as HTML.
HOSTILE_RESPONSE = ' <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> Tea.'
CALM_RESPONSE = " Boil fresh water, pour it over the leaves and wait three minutes before you drink it."
STEP_S = 0.06  # seconds per token: both sides take a few seconds, so the page can be watched mid-stream
TIMEOUT_MS = 180_000
HEADLINE = "PPO beats SFT on mean gold-judge score (a sentence the evaluation wrote)."

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is absent (.ci/run installs it: apt-get install chromium)"),
]

# The text of the last response in a pane, as a reader sees it.
PANE_TEXT = """(pane) => { const m = document.querySelectorAll(pane + ' [data-testid="bot"]');
                           return m.length ? m[m.length - 1].innerText.trim() : ''; }"""
BOTH_PARTIAL = f"""() => {{ const text = {PANE_TEXT};
    const a = text('#chat_a'), b = text('#chat_b');
    return a && b && document.querySelector('#status').innerText.includes('Generating') ? [a, b] : null; }}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from gpt2_rlhf.space.app import CSS, build_demo

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        root = tmp_path_factory.mktemp("space_browser")
        run = make_run(root / "run", sft=False)
        tok = Policy.load("base", str(run / "base")).tokenizer

        def scripted(role, model_id, text):
            lm = ScriptedLM(tok(text, add_special_tokens=False)["input_ids"], len(tok), tok.eos_token_id, delay_s=STEP_S)
            return Policy(role, model_id, lm, tok)

        engine = Engine({"base": scripted("base", "scripted/html-writer", HOSTILE_RESPONSE),
                         "rlhf": scripted("rlhf", "alice/tiny-ppo", CALM_RESPONSE)},
                        RewardScorer.load(str(run / "reward")))
        votes = VoteLog(root / "votes.jsonl")
        info = {"headline": [HEADLINE], "card_url": "https://huggingface.co/alice/tiny-ppo",
                "examples": ["How do I stay focused while studying?", "What should I pack for a hike?"]}
        demo = build_demo(engine, votes, info=info)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                    css=CSS)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", votes=votes)
        demo.close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    d = Path(os.environ.get("RLHF_ARTIFACTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def box(page, selector: str) -> dict:
    b = page.locator(selector).first.bounding_box()
    assert b is not None, f"{selector} is not on the page"
    return b


def compare_and_watch(page, prompt: str):
    """Types a prompt, Compares, and returns both panes' text as seen mid-stream and at the end."""
    from playwright.sync_api import expect

    page.locator("#prompt textarea").fill(prompt)
    page.locator("#compare").click()
    partial = page.wait_for_function(BOTH_PARTIAL, timeout=TIMEOUT_MS, polling=50).json_value()
    expect(page.locator("#status")).to_contain_text("Done.", timeout=TIMEOUT_MS)
    final = [page.evaluate(PANE_TEXT, pane) for pane in ("#chat_a", "#chat_b")]
    return partial, final


def test_blind_flow_on_a_laptop(app, browser, artifacts):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url, wait_until="domcontentloaded")
    header = page.locator("#header")
    expect(header).to_contain_text(HEADLINE)
    assert page.locator("#header a", has_text="Model card").get_attribute("href") == "https://huggingface.co/alice/tiny-ppo"
    expect(page.locator("#vote_left")).to_be_disabled()  # nothing to vote on yet

    prompt = '<b>hi</b><img src=y onerror="window.__pwned=3"> How do I make tea?'
    partial, final = compare_and_watch(page, prompt)
    # both panes were part-written at the same moment, before either had finished
    assert all(0 < len(p) < len(f) and f.startswith(p) for p, f in zip(partial, final)), (partial, final)
    assert sorted(final) == sorted([HOSTILE_RESPONSE.strip(), CALM_RESPONSE.strip()])  # markup shown as written
    assert page.evaluate("window.__pwned") is None and page.locator("img[src='x'], img[src='y']").count() == 0
    assert page.locator("#chat_a [data-testid='user']").inner_text().strip() == prompt
    # blind: letters only, scores hidden, the lengths shown
    expect(page.locator("#name_a")).to_have_text("Model A")
    expect(page.locator("#name_b")).to_have_text("Model B")
    for side in ("a", "b"):
        expect(page.locator(f"#score_{side}")).to_contain_text(re.compile(r"^\s*Score hidden until you vote · \d+ words?"))
    expect(page.locator("#vote_left")).to_be_enabled()
    # the responses, their score lines and the vote buttons fit the laptop screen without scrolling
    for sel in ("#chat_a", "#chat_b", "#score_a", "#score_b", "#vote_left", "#vote_both_bad", "#status"):
        b = box(page, sel)
        assert b["y"] >= 0 and b["y"] + b["height"] <= 768, (sel, b)
    page.screenshot(path=str(artifacts / "space_laptop_1366x768.png"))

    page.locator("#vote_left").click()
    status = page.locator("#status")
    expect(status).to_contain_text(re.compile(r'^\s*Thanks! Your vote "A is better" was recorded\. Model A was '))
    for btn in ("left", "right", "tie", "both_bad"):
        expect(page.locator(f"#vote_{btn}")).to_be_disabled()
    expect(page.locator("#name_a")).to_contain_text(re.compile(r"^\s*Model A: (Base|PPO) · "))
    for side in ("a", "b"):
        expect(page.locator(f"#score_{side}")).to_contain_text(re.compile(r"^\s*Reward [+-]\d\.\d{3} \(reward model, in std devs"))
    # the confirmation sits right under the buttons
    assert 0 <= box(page, "#status")["y"] - (box(page, "#vote_left")["y"] + box(page, "#vote_left")["height"]) < 60
    page.screenshot(path=str(artifacts / "space_laptop_voted.png"))

    rec = json.loads(app.votes.path.read_text().splitlines()[-1])
    assert rec["vote"] == "left" and rec["anonymised"] is True and rec["turn"] == 1
    assert rec["chosen"].strip() == final[0] and rec["rejected"].strip() == final[1]
    assert rec["prompt"] == f"\n\nHuman: {prompt}\n\nAssistant:"
    revealed = page.locator("#name_a").inner_text()
    assert ("PPO" in revealed) == (rec["chosen_model"] == "alice/tiny-ppo")

    # a prompt over the cap says so, instead of being cut short by the browser
    page.locator("#prompt textarea").fill("x" * 4_100)
    assert len(page.locator("#prompt textarea").input_value()) == 4_100
    page.locator("#compare").click()
    expect(status).to_contain_text("Your prompt is 4,100 characters long; this Space accepts at most 4,000")
    page.close()


def test_blind_flow_on_a_phone(app, browser, artifacts):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url, wait_until="domcontentloaded")
    partial, final = compare_and_watch(page, "How do I make tea?")
    assert all(0 < len(p) < len(f) for p, f in zip(partial, final)), (partial, final)
    page.locator("#vote_tie").click()
    status = page.locator("#status")
    expect(status).to_contain_text('Thanks! Your vote "Tie" was recorded.')
    expect(page.locator("#vote_tie")).to_be_disabled()
    # on a phone the confirmation is next to the buttons, not a screen away (the buttons wrap onto rows)
    gap = box(page, "#status")["y"] - (box(page, "#vote_both_bad")["y"] + box(page, "#vote_both_bad")["height"])
    assert 0 <= gap < 60, gap
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    page.screenshot(path=str(artifacts / "space_phone_390x844.png"), full_page=True)
    page.close()
    assert (artifacts / "space_phone_390x844.png").stat().st_size > 10_000
