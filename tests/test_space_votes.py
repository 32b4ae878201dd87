"""space/votes.py: vote records, safe concurrent appends, the Hub scheduler, and `rlhf votes`."""

from __future__ import annotations

import json
import multiprocessing
import threading
from argparse import Namespace
from concurrent.futures import Future

import pytest

from gpt2_rlhf.space.votes import (
    SCHEMA,
    PendingComparisons,
    VoteLog,
    VotesError,
    append_vote,
    cli,
    hub_vote_log,
    make_record,
    votes_to_preferences,
)

PROMPT = "\n\nHuman: How do I make tea?\n\nAssistant:"


def comparison(left=" Boil water.", right=" Tea is made with <b>leaves</b>\n& water.", cid=None, blind=True):
    return {
        "id": cid, "prompt": PROMPT, "anonymised": blind, "reward_model": "rm",
        "decoding": {"max_new_tokens": 16, "temperature": 0.7, "top_p": 1.0, "seed": 3},
        "left": {"role": "base", "model": "me/base", "response": left, "reward": -1.0, "reward_normalised": -0.5},
        "right": {"role": "rlhf", "model": "me/ppo", "response": right, "reward": 2.0, "reward_normalised": 1.0},
    }


def test_make_record_maps_the_vote_to_chosen_and_rejected():
    right = make_record("right", comparison(cid="c1"))
    assert right["schema"] == SCHEMA and right["id"] == "c1" and right["vote"] == "right"
    assert (right["chosen"], right["rejected"]) == (" Tea is made with <b>leaves</b>\n& water.", " Boil water.")
    assert (right["chosen_model"], right["rejected_model"]) == ("me/ppo", "me/base")
    assert right["decoding"]["seed"] == 3 and right["time"].endswith("Z") and right["prompt"] == PROMPT
    left = make_record("left", comparison())
    assert (left["chosen"], left["rejected_model"]) == (" Boil water.", "me/ppo")
    for choice in ("tie", "both_bad"):
        rec = make_record(choice, comparison())
        assert rec["chosen"] is None and rec["rejected"] is None and rec["left"]["response"] == " Boil water."
    with pytest.raises(ValueError, match="vote must be one of"):
        make_record("middle", comparison())


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_200_threads_append_200_whole_lines(tmp_path):
    log = VoteLog(tmp_path / "votes" / "votes.jsonl")
    nasty = " \x00\x1b<script>alert(1)</script>\u2028\n\r\n" + "é" * 5000  # long, multi-byte, control chars
    barrier = threading.Barrier(50)

    def worker(i):
        if i < 50:
            barrier.wait()
        log.append(make_record("left" if i % 2 else "tie", comparison(left=nasty + str(i), cid=f"id{i}")))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs = _lines(log.path)
    assert len(recs) == len(log) == 200
    assert sorted(r["id"] for r in recs) == sorted(f"id{i}" for i in range(200))
    assert all(r["left"]["response"] == nasty + r["id"][2:] for r in recs)  # texts round-trip exactly


def _append_from_process(path, n, tag):
    for i in range(n):
        append_vote(path, make_record("right", comparison(left="x" * 3000, cid=f"{tag}-{i}")))


def test_processes_appending_to_one_file_never_interleave(tmp_path):
    path = tmp_path / "votes.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_from_process, args=(path, 40, f"p{k}")) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    recs = _lines(path)
    assert len(recs) == 120 and len({r["id"] for r in recs}) == 120


def test_pending_comparisons_one_vote_each_and_bounded():
    store = PendingComparisons(capacity=2)
    a = store.add(comparison())
    assert store.take(a, "left") == (comparison(cid=a), "ok")
    assert store.take(a, "right") == (None, "voted")
    assert store.take("nope", "left") == (None, "unknown")
    ids = [store.add(comparison()) for _ in range(3)]
    assert len(store) == 2 and store.take(ids[0], "tie") == (None, "unknown")  # oldest dropped
    assert store.take(ids[2], "tie")[1] == "ok"


class FakeHub:
    """Records what CommitScheduler sends; runs its jobs inline."""

    def __init__(self):
        self.repos, self.commits = [], []

    def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False):
        self.repos.append((repo_id, repo_type, private))
        return Namespace(repo_id=repo_id)

    def run_as_future(self, fn, *args, **kwargs):
        f = Future()
        f.set_result(fn(*args, **kwargs))
        return f

    def create_commit(self, repo_id, repo_type, operations, commit_message, revision=None):
        files = {op.path_in_repo: op.path_or_fileobj.read() for op in operations}
        self.commits.append((repo_id, repo_type, files))
        return Namespace(oid="abc")


def test_votes_are_pushed_to_a_hub_dataset_by_a_commit_scheduler(tmp_path):
    hub = FakeHub()
    log = hub_vote_log("me/votes", tmp_path / "votes", hf_api=hub)
    try:
        assert hub.repos == [("me/votes", "dataset", True)]
        assert log.lock is log.scheduler.lock  # writes and uploads exclude each other
        for i in range(3):
            log.append(make_record("left", comparison(cid=f"c{i}")))
        log.scheduler.trigger().result()
        repo, repo_type, files = hub.commits[-1]
        assert (repo, repo_type) == ("me/votes", "dataset")
        assert files == {f"data/{log.path.name}": log.path.read_bytes()}
        assert [json.loads(x)["id"] for x in files[f"data/{log.path.name}"].splitlines()] == ["c0", "c1", "c2"]
    finally:
        log.scheduler.stop()


# ----------------------------------------------------------------------------- votes -> preferences


def _write_votes(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_votes_to_preferences_keeps_decisive_distinct_pairs(tmp_path):
    records = [
        make_record("right", comparison(cid="a")),
        make_record("left", comparison(cid="b")),
        make_record("tie", comparison(cid="c")),
        make_record("both_bad", comparison(cid="d")),
        make_record("left", comparison(left=" same", right=" same ", cid="e")),
        make_record("left", comparison(left=" ok\n\nHuman: more?\n\nAssistant: sure", cid="f")),
        make_record("left", comparison(left=" ok\n\nHuman: more?", cid="g")),  # a Human turn splits fine
        make_record("right", comparison(cid="a")),  # the same comparison twice
    ]
    path = tmp_path / "votes.jsonl"
    _write_votes(path, records)
    rows, counts = votes_to_preferences(path)
    good, bad = " Tea is made with <b>leaves</b>\n& water.", " Boil water."
    assert rows == [{"chosen": PROMPT + good, "rejected": PROMPT + bad},
                    {"chosen": PROMPT + bad, "rejected": PROMPT + good},
                    {"chosen": PROMPT + " ok\n\nHuman: more?", "rejected": PROMPT + good}]
    assert counts == {"votes": 8, "vote_right": 2, "vote_left": 4, "vote_tie": 1, "vote_both_bad": 1,
                      "skipped_not_decisive": 2, "skipped_identical": 1, "skipped_assistant_turn": 1,
                      "skipped_duplicate_id": 1, "pairs": 3}
    # HH split: everything up to the last "\n\nAssistant:" is the shared prompt
    for row in rows:
        cut = [t.rfind("\n\nAssistant:") + len("\n\nAssistant:") for t in (row["chosen"], row["rejected"])]
        assert row["chosen"][: cut[0]] == row["rejected"][: cut[1]] == PROMPT


def test_preferences_load_with_the_project_loader(tmp_path):
    from gpt2_rlhf.train.data import DataConfig, load_preferences

    path = tmp_path / "votes.jsonl"
    records = [make_record("right", comparison(cid=str(i), left=f" answer {i}")) for i in range(4)]
    records.append(make_record("left", comparison(left="", cid="empty")))  # EOS first: an empty response
    records.append(make_record("left", comparison(left=" ok\n\nHuman: more?", cid="turn")))
    _write_votes(path, records)
    out = tmp_path / "prefs.jsonl"
    assert cli(Namespace(votes=str(path), out=str(out))) == 0
    rows, report = load_preferences(DataConfig(dataset=str(out), on_bad_rows="error", file_test_fraction=0.0), "train")
    assert report.n_problems == 0
    good = " Tea is made with <b>leaves</b>\n& water."
    assert rows == [*({"prompt": PROMPT, "chosen": good, "rejected": f" answer {i}"} for i in range(4)),
                    {"prompt": PROMPT, "chosen": " ok\n\nHuman: more?", "rejected": good}]


def test_cli_writes_hh_jsonl_and_prints_counts(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    _write_votes(path, [make_record("right", comparison(cid="a")), make_record("tie", comparison(cid="b"))])
    out = tmp_path / "out" / "prefs.jsonl"
    assert cli(Namespace(votes=str(path), out=str(out))) == 0
    assert [set(r) for r in _lines(out)] == [{"chosen", "rejected"}]
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 1 and printed["skipped_not_decisive"] == 1 and printed["out"] == str(out)


def test_bad_votes_name_the_line_and_destroy_nothing(tmp_path):
    path = tmp_path / "votes.jsonl"
    good = json.dumps(make_record("left", comparison(cid="a")))
    out = tmp_path / "prefs.jsonl"
    out.write_text("previous\n")
    cases = [
        (good + "\n{broken\n", r"votes.jsonl:2: not valid JSON"),
        (good + "\n" + json.dumps({**json.loads(good), "vote": "meh"}) + "\n", r"votes.jsonl:2: field 'vote'"),
        (json.dumps({**json.loads(good), "chosen": None}) + "\n", r"votes.jsonl:1: field 'chosen' must be a string"),
        (json.dumps({**json.loads(good), "prompt": "no turn"}) + "\n", r"votes.jsonl:1: field 'prompt' must end"),
        (json.dumps(make_record("tie", comparison())) + "\n", r"no decisive votes"),
    ]
    for text, match in cases:
        path.write_text(text)
        with pytest.raises(VotesError, match=match):
            cli(Namespace(votes=str(path), out=str(out)))
        assert out.read_text() == "previous\n"
    with pytest.raises(VotesError, match="would overwrite the votes it reads"):
        cli(Namespace(votes=str(path), out=str(path)))
    with pytest.raises(VotesError, match="no such votes file"):
        cli(Namespace(votes=str(tmp_path / "missing.jsonl"), out=str(out)))


def test_blind_votes_only_unless_anchored_ones_are_asked_for(tmp_path, capsys):
    """Anchored votes (names and scores shown) are biased preference data: left out by default."""
    from gpt2_rlhf.cli import main

    path = tmp_path / "votes.jsonl"
    _write_votes(path, [make_record("left", comparison(cid="a")),
                        make_record("right", comparison(cid="b", left=" Anchored.", blind=False))])
    rows, counts = votes_to_preferences(path)
    assert [r["rejected"] for r in rows] == [PROMPT + " Tea is made with <b>leaves</b>\n& water."]
    assert counts["skipped_not_blind"] == 1 and counts["pairs"] == 1
    assert main(["votes", str(path), "--out", str(tmp_path / "blind.jsonl")]) == 0
    assert main(["votes", str(path), "--out", str(tmp_path / "old.jsonl"), "--blind-only"]) == 0  # old spelling
    assert main(["votes", str(path), "--out", str(tmp_path / "all.jsonl"), "--include-anchored"]) == 0
    assert (len(_lines(tmp_path / "blind.jsonl")), len(_lines(tmp_path / "old.jsonl")),
            len(_lines(tmp_path / "all.jsonl"))) == (1, 1, 2)
    # only anchored votes: the error says what was left out and how to keep it
    _write_votes(path, [make_record("right", comparison(cid="c", blind=False))])
    capsys.readouterr()
    assert main(["votes", str(path), "--out", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "1 anchored votes were left out (--include-anchored keeps them)" in err


def test_a_later_turn_with_two_dialogues_makes_no_pair(tmp_path):
    """From turn 2 on, each side answered its own dialogue: no shared prompt, so no HH pair."""
    later = comparison(cid="t2")
    later["turn"] = 2
    later["left"] = {**later["left"], "prompt": PROMPT + " Boil water.\n\nHuman: and?\n\nAssistant:"}
    later["right"] = {**later["right"], "prompt": PROMPT + " Leaves.\n\nHuman: and?\n\nAssistant:"}
    later["prompt"] = later["left"]["prompt"]
    same = comparison(cid="t1")
    same["left"] = {**same["left"], "prompt": PROMPT}
    same["right"] = {**same["right"], "prompt": PROMPT}
    path = tmp_path / "votes.jsonl"
    _write_votes(path, [make_record("left", later), make_record("left", same)])
    rows, counts = votes_to_preferences(path)
    assert counts["skipped_different_context"] == 1 and rows == [{"chosen": PROMPT + " Boil water.",
                                                                 "rejected": PROMPT + same["right"]["response"]}]
    assert json.loads(path.read_text().splitlines()[0])["turn"] == 2


def test_rlhf_votes_command(tmp_path, capsys):
    from gpt2_rlhf.cli import main

    path = tmp_path / "votes.jsonl"
    _write_votes(path, [make_record("left", comparison(cid="a"))])
    assert main(["votes", str(path), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert len(_lines(tmp_path / "p.jsonl")) == 1
    path.write_text("nope\n")
    capsys.readouterr()
    assert main(["votes", str(path), "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf votes: error:") and "votes.jsonl:1" in err and "\n" not in err
