"""`rlhf card RUN_DIR`: model cards that print only measured numbers.

The seed card (seed 003) claimed "70-80% accuracy" and "500%+ reward
improvement" that nothing measured. Here a card is a pure function of the files
a run wrote:

1. Read those files (`sources.CardSources`); a missing or malformed one is a
   one-line error naming it.
2. Build the template context (`context`): every number is formatted by `fmt`
   from a value in those files; the Jinja templates in `model_card/templates/`
   hold the sentences and contain no number (tests/test_card.py checks each
   number of a rendered card against the report). A value that is absent drops
   its row or section: no "None", no empty cell.
3. Render the templates with the card's YAML metadata (`metadata.card_data`:
   license, base_model, datasets, tags, pipeline_tag and a `model-index` with an
   `EvalResult` per headline metric, values cast to plain floats) as a
   `huggingface_hub.ModelCard`.
4. Write `OUTPUT/card/` atomically (`gpt2_rlhf.train.rundir.StageWriter`): the policy card
   `README.md`, the reward-model card `reward/README.md`, the SFT card
   `sft/README.md`, and the card's inputs (`eval/`, `configs/`, `recipe.yaml`,
   `card.json`), so the folder is exactly what `rlhf push` uploads next to the
   weights and what `rlhf reproduce` re-renders and compares.

Deviation from the Hub's default template: we drop its many "[More Information
Needed]" sections; a section without measured content is left out instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

from .context import (
    RM_FINDING_IDS,
    ci_context,
    claims_context,
    compact_table,
    comparison_context,
    curve_context,
    data_context,
    example_context,
    feedback_context,
    findings,
    headline_rows,
    improvement_rows,
    judges_context,
    label,
    limitation_context,
    model_context,
    models_of,
    plot_context,
    policy_of,
    reference_metric_table,
    reference_rows,
    reproduce_context,
    results_table,
    reward_context,
    rm_rows,
    stage_context,
    summary_context,
    usage_context,
    win_rate_rows,
)
from gpt2_rlhf.evaluation.policies import POLICY_KEYS

from .markdown import fmt, md_cell
from .metadata import card_data, dataset_url, hub_base_model, hub_url
from .options import CARD_META, CardOptions, hub_config_of
from .sources import CardSources, get_path, is_number

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
POLICY_TEMPLATE = "policy_card.md"
REWARD_TEMPLATE = "reward_card.md"
SFT_TEMPLATE = "sft_card.md"

CARD_DIR = "card"


def _render(template: str, metadata, **context) -> str:
    """`ModelCard.from_template`, with a loader so that the templates can import their shared parts."""
    import jinja2
    from huggingface_hub import ModelCard

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES))
    kwargs = {**metadata.to_dict(), **context}  # as from_template: the context has priority over the metadata
    text = str(ModelCard(env.get_template(template).render(card_data=metadata.to_yaml(), **kwargs)))
    return _squeeze(text).rstrip("\n") + "\n"


def _squeeze(text: str) -> str:
    """Collapses runs of blank lines left by dropped sections, outside fenced blocks only."""
    out, fence = [], None
    for line in text.split("\n"):
        m = re.match(r"^(`{3,})", line)
        if m and (fence is None or m.group(1) == fence):
            fence = None if fence else m.group(1)
        if fence is None and not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out)


def render_texts(src: CardSources, opts: CardOptions) -> dict[str, str]:
    """The three cards as text: {"README.md": policy card, "reward/README.md": ..., "sft/README.md": ...}."""
    r = src.report
    policy = policy_of(r)
    models = models_of(r)
    # Without a repo id (a local card) the snippets load from the run directory.
    policy_id = opts.repo_id or f"RUN_DIR/{policy}"
    title = opts.repo_id or f"gpt2-rlhf {label(policy)} model"
    gpt2 = hub_base_model(src, CardOptions()) is not None
    judges = judges_context(r)  # the held-out judges, pushed with the reward model (`judges/<name>/`)
    if judges is not None and opts.reward_repo_id:
        judges = {**judges, "reward_id": opts.reward_repo_id, "reward_url": hub_url(opts.reward_repo_id)}
    texts = {}
    texts["README.md"] = _render(
        POLICY_TEMPLATE, card_data(src, opts, "policy", title),
        title=title, summary=summary_context(r, policy), headlines=headline_rows(r, policy),
        model=model_context(src, policy), claims=claims_context(r, policy), compact=compact_table(r, policy),
        gpt2=gpt2,
        warnings=[f["text"] for f in findings(r) if f["warned"]],
        report_path=src.where, reproduce_target=opts.repo_id or "RUN_DIR", data=data_context(src),
        samples_repo_id=opts.samples_repo_id, samples_url=dataset_url(opts.samples_repo_id),
        stages=[c for s in ("sft", "reward", *POLICY_KEYS) if (c := stage_context(src, s))],
        feedback=feedback_context(r), comparison=comparison_context(r),
        model_labels=[label(m) for m in models], results=results_table(r), ci=ci_context(r), judges=judges,
        reference_metrics=reference_metric_table(r), win_rates=win_rate_rows(r), improvements=improvement_rows(r),
        chosen=reference_rows(r), gold_win_rates=win_rate_rows(r, "gold_win_rates"), curve=curve_context(r),
        rm=rm_rows(r), findings=findings(r), plots=plot_context(src), examples=example_context(src, opts.examples),
        usage=usage_context(r, policy_id), reproduce=reproduce_context(r, opts.repo_id),
        limitations=limitation_context(r, "policy", gpt2), reward=reward_context(r),
        citation={"key": re.sub(r"\W+", "_", title).strip("_"), "version": get_path(r, "versions", "gpt2_rlhf"),
                  "year": str(r.get("created", ""))[:4] or None, "url": hub_url(opts.repo_id)},
    )
    rm = r.get("reward_model") or {}
    if rm or src.stage_section("reward"):
        stats = rm.get("stats") or {}
        reward_id = opts.reward_repo_id or "RUN_DIR/reward"
        texts["reward/README.md"] = _render(
            REWARD_TEMPLATE, card_data(src, opts, "reward", opts.reward_repo_id or "gpt2-rlhf reward model"),
            title=opts.reward_repo_id or "gpt2-rlhf reward model",
            policy_id=opts.repo_id, policy_url=hub_url(opts.repo_id), data=data_context(src),
            rm=rm_rows(r), margin=fmt(rm["mean_margin"]) if is_number(rm.get("mean_margin")) else None,
            findings=findings(r, RM_FINDING_IDS), judges=judges,
            stats=[{"name": k, "value": fmt(v) if is_number(v) else f"`{md_cell(v)}`"} for k, v in stats.items()],
            stage=stage_context(src, "reward"), model_id=reward_id, limitations=limitation_context(r, "reward", gpt2),
        )
    if "sft" in models or src.stage_section("sft"):
        sft_id = opts.sft_repo_id or "RUN_DIR/sft"
        sft_models = [m for m in models if m in ("base", "sft")]
        texts["sft/README.md"] = _render(
            SFT_TEMPLATE, card_data(src, opts, "sft", opts.sft_repo_id or "gpt2-rlhf SFT model"),
            title=opts.sft_repo_id or "gpt2-rlhf SFT model", policy_id=opts.repo_id,
            policy_url=hub_url(opts.repo_id), data=data_context(src),
            results=results_table(r, models=sft_models) if sft_models else {"columns": [], "rows": []},
            ci=ci_context(r), stage=stage_context(src, "sft"), usage=usage_context(r, sft_id),
            limitations=limitation_context(r, "sft", gpt2),
        )
    return texts


def write_bundle(src: CardSources, opts: CardOptions, out: Path) -> Path:
    """Writes the cards and their inputs into `out` (an empty folder); returns the policy card path."""
    from gpt2_rlhf.train.config import write_yaml
    from gpt2_rlhf.train.rundir import package_version, write_json, write_text

    texts = render_texts(src, opts)
    for rel, text in texts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write_text(out / rel, text)
    (out / "eval").mkdir(exist_ok=True)
    write_json(out / "eval" / "report.json", src.report)
    write_text(out / "eval" / str(src.report.get("samples", "samples.jsonl")),
               "".join(json.dumps(row) + "\n" for row in src.samples))
    for name, path in src.plot_files.items():
        dest = out / "eval" / src.report["plots"][name]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    if src.configs:
        (out / "configs").mkdir(exist_ok=True)
        for stage, cfg in src.configs.items():
            write_yaml(cfg, out / "configs" / f"{stage}.yaml")
    if src.recipe is not None:
        write_yaml(src.recipe, out / "recipe.yaml")
    write_json(out / CARD_META, {"options": dataclasses.asdict(opts), "gpt2_rlhf": package_version()})
    return out / "README.md"


def render_card(run_dir: str | Path, repo_id: str | None = None) -> Path:
    """Renders OUTPUT/card/ from OUTPUT/eval and the stage configs; returns OUTPUT/card/README.md."""
    from gpt2_rlhf.train.rundir import StageWriter

    run_dir = Path(run_dir)
    src = CardSources.from_run_dir(run_dir)  # every input is checked before anything is written
    opts = CardOptions.from_hub_config(hub_config_of(run_dir), repo_id=repo_id)
    logger.info("card options: %s", dataclasses.asdict(opts))
    with StageWriter(run_dir, CARD_DIR) as w:
        write_bundle(src, opts, w.path)
        final = w.finish()
    return final / "README.md"


def cli(args) -> int:
    path = render_card(Path(args.run_dir))
    print(path)
    return 0
