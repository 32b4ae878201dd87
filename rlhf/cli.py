"""The `rlhf` command: one entry point for every stage of the pipeline.

    rlhf run [--config FILE] [--output-dir DIR] [--dataset PATH_OR_HUB_ID]
    rlhf data PATH_OR_HUB_ID [--on-bad-rows error|skip] [--prompts]
    rlhf sft|label|reward|ppo|dpo|rloo --config FILE --output-dir DIR [--dataset ...] [--resume]
    rlhf evaluate RUN_DIR
    rlhf card RUN_DIR
    rlhf reproduce RUN_DIR_OR_REPO
    rlhf push RUN_DIR --repo-id ID [--dry-run]
    rlhf space RUN_DIR [--port N]
    rlhf votes VOTES_JSONL --out FILE

Every training command also takes `--<section>.<field> VALUE` to override a
recipe value (`rlhf run --ppo.learning_rate 3e-5`). Errors a user can fix are
printed as one line on stderr with exit code 2; nothing is written before the
recipe, the data and the inputs have been checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("rlhf")

def _call(target: str, *args, **kwargs):
    """Runs "module:function" (a command's code is imported only when that command runs)."""
    from .stages import resolve

    return resolve(target)(*args, **kwargs)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Libraries chatter at INFO; keep the terminal to what the user needs.
    for name in ("httpx", "urllib3", "datasets", "filelock", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _recipe_args(p: argparse.ArgumentParser, config_required: bool, flags: bool = True) -> None:
    p.add_argument("--config", required=config_required, default=None if config_required else "tiny",
                   help="recipe YAML file, or a shipped recipe name (tiny, micro, gpt2-hh); default: tiny")
    p.add_argument("--output-dir", required=config_required, default=None if config_required else "outputs/tiny",
                   help="run directory (default: outputs/tiny)")
    p.add_argument("--dataset", default=None, help="preference data: a local file/folder or a Hub dataset id")
    p.add_argument("--seed", default=None, help="override the recipe's seed")
    if flags:
        _override_flags(p)


def _override_flags(p: argparse.ArgumentParser, sections: list[str] | None = None) -> None:
    """The `--<section>.<field>` flags. They import every stage's config class (and so torch, seconds), so
    build_parser adds them only to the subcommand being run: `rlhf card` or `reproduce` starts at once."""
    from .stages import SECTIONS
    from gpt2_rlhf.train.config import add_override_flags

    add_override_flags(p, SECTIONS, sections)


def _load(args: argparse.Namespace):
    from .stages import load_recipe
    from gpt2_rlhf.train.config import overrides_from_args

    overrides = overrides_from_args(args)
    if args.dataset:
        overrides["data.dataset"] = args.dataset
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_recipe(args.config, overrides)


def command_of(argv: list[str]) -> str | None:
    """The subcommand argv names (its first word that is not an option), None for `rlhf -h`."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI. `command`: the subcommand about to run; only it gets the recipe override flags (all do
    when None, as for the docs)."""
    flags = lambda name: command is None or command == name  # noqa: E731
    parser = argparse.ArgumentParser(prog="rlhf", description="Train, measure and publish GPT-2 with RLHF.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage of a recipe in order (default: the embedded tiny recipe)")
    _recipe_args(p, config_required=False, flags=flags("run"))
    p.add_argument("--force", action="store_true", help="rerun stages even when a finished one matches the recipe")
    p.add_argument("--resume", action="store_true", help="continue unfinished stages from their checkpoints")

    p = sub.add_parser("data", help="validate a preference dataset (or, with --prompts, prompt-only data) and count "
                                    "its problems")
    p.add_argument("dataset", help="a local .jsonl/.json/.parquet file or folder, 'embedded', or a Hub dataset id "
                                   "(with --prompts also a .txt file of prompts, or 'stories')")
    p.add_argument("--prompts", action="store_true",
                   help="prompt-only data (the recipe's prompts: section): one prompt per line or a prompt column")
    p.add_argument("--column", default=None, help="with --prompts: the prompt column (default: prompt)")
    p.add_argument("--on-bad-rows", choices=["error", "skip"], default="error")
    p.add_argument("--split", default=None, help="only this split (default: train and test)")
    p.add_argument("--data-dir", default=None, help="Hub dataset data_dir, e.g. harmless-base")
    p.add_argument("--columns", default=None, metavar="PROMPT,CHOSEN,REJECTED",
                   help="column names when the data already has prompt/chosen/rejected columns")
    p.add_argument("--tokenizer", default=None, help="tokenizer to check pair lengths with")
    p.add_argument("--max-length", type=int, default=None, help="context length for the too_long check")

    for stage, text in (("base", "build the base model (tokenizer + tiny GPT-2, or load gpt2)"),
                        ("sft", "stage 1: supervised fine-tuning on chosen responses"),
                        ("label", "feedback: sample the policy k times per prompt and label the pairs"),
                        ("reward", "stage 2: the pairwise reward model"),
                        ("ppo", "stage 3: PPO against the reward model"),
                        ("dpo", "DPO (TRL) from SFT on the preference pairs, beside PPO"),
                        ("rloo", "RLOO (TRL) from SFT against PPO's reward, beside PPO")):
        p = sub.add_parser(stage, help=text)
        _recipe_args(p, config_required=True, flags=flags(stage))
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")

    p = sub.add_parser("evaluate", help="compare base, SFT and every trained policy (PPO, DPO, RLOO) on held-out "
                                        "prompts; writes eval/report.json")
    p.add_argument("run_dir")
    p.add_argument("--config", default=None, help="recipe (default: RUN_DIR/recipe.yaml)")
    p.add_argument("--prompts", default=None, help="a file of prompts (JSONL with 'prompt', or HH pairs) instead of the test split")
    if flags("evaluate"):
        _override_flags(p, ["eval"])

    p = sub.add_parser("card", help="render the model card from eval/report.json")
    p.add_argument("run_dir")

    p = sub.add_parser("reproduce", help="rerun the evaluation of a card and compare every reported number")
    p.add_argument("run_dir_or_repo")
    p.add_argument("--tolerance", type=float, default=None, help="relative tolerance (default: the report's)")

    p = sub.add_parser("push", help="upload the trained policy (PPO, else DPO or RLOO), its card and report, and "
                                    "the evaluation samples as a dataset, to the Hub")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--dry-run", action="store_true", help="print every file and the card metadata; send nothing")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to push to")
    p.add_argument("--sft-repo-id", default=None, help="also push the SFT model here")
    p.add_argument("--reward-repo-id", default=None, help="also push the reward model here")
    p.add_argument("--base-repo-id", default=None,
                   help="also push the base model here (lets `rlhf reproduce REPO` run when the base was built locally)")
    p.add_argument("--space", default=None, metavar="SPACE_ID", help="also push space/ as a Gradio Space")
    p.add_argument("--space-hardware", default=None, metavar="FLAVOR",
                   help="the Space's hardware (default: the front matter's suggested_hardware, zero-a10g: ZeroGPU)")
    samples = p.add_mutually_exclusive_group()
    samples.add_argument("--samples-repo-id", default=None, metavar="ID",
                         help="the dataset repo of the evaluation's samples and report (default: REPO_ID-eval-samples)")
    samples.add_argument("--no-samples", action="store_true", help="push no samples dataset")

    p = sub.add_parser("space", help="serve the Gradio Space on a run directory")
    p.add_argument("run_dir")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--votes", default=None, help="votes JSONL (default: RUN_DIR/votes/votes.jsonl)")

    p = sub.add_parser("votes", help="turn Space votes into an HH-format preference dataset")
    p.add_argument("votes", help="votes JSONL written by the Space")
    p.add_argument("--out", required=True, help="output JSONL (HH format: chosen/rejected)")
    p.add_argument("--blind-only", action="store_true",
                   help="the default, kept for old scripts: only votes cast with the model names and scores hidden")
    p.add_argument("--include-anchored", action="store_true",
                   help="also keep votes cast with the names and scores shown (biased preference data)")
    return parser


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline
    from .stages import unneeded_stages

    recipe = _load(args)
    skipped = unneeded_stages(recipe)
    for stage, why in skipped.items():
        logger.info("stage %s: not trained: %s", stage, why)
    recipe.stages = [s for s in recipe.stages if s not in skipped]
    run_pipeline(recipe, Path(args.output_dir), force=args.force, resume=args.resume)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """`rlhf evaluate RUN_DIR [--config FILE] [--prompts FILE] [--eval.<field> V]`."""
    from gpt2_rlhf.evaluation.run import main as evaluate
    from .stages import load_recipe
    from gpt2_rlhf.train.config import overrides_from_args

    run_dir = Path(args.run_dir)
    if args.config:
        config = args.config
    elif (run_dir / "recipe.yaml").is_file():
        config = run_dir / "recipe.yaml"
    else:
        logger.info("%s has no recipe.yaml; using the tiny recipe's settings", run_dir)
        config = "tiny"
    overrides = overrides_from_args(args)
    if getattr(args, "prompts", None):
        overrides["eval.prompts_file"] = args.prompts
    evaluate(load_recipe(config, overrides), run_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from gpt2_rlhf.train.config import ConfigError
    from gpt2_rlhf.train.rundir import StageError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "data" and args.prompts:
            return _call("gpt2_rlhf.train.data:validate_prompts_command", args.dataset, on_bad_rows=args.on_bad_rows,
                         split=args.split, column=args.column, data_dir=args.data_dir)
        if args.command == "data":
            columns = tuple(args.columns.split(",")) if args.columns else None
            return _call("gpt2_rlhf.train.data:validate_command", args.dataset, on_bad_rows=args.on_bad_rows, split=args.split,
                         data_dir=args.data_dir, columns=columns, tokenizer=args.tokenizer, max_length=args.max_length)
        if args.command in ("base", "sft", "label", "reward", "ppo", "dpo", "rloo"):
            from .pipeline import run_stage

            run_stage(args.command, _load(args), Path(args.output_dir), resume=args.resume)
            return 0
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "card":
            return _call("gpt2_rlhf.model_card.render:cli", args)
        if args.command == "reproduce":
            return _call("gpt2_rlhf.model_card.reproduce:cli", args)
        if args.command == "push":
            return _call("gpt2_rlhf.model_card.publish:cli", args)
        if args.command == "space":
            return _call("gpt2_rlhf.serve:cli", args)
        if args.command == "votes":
            return _call("gpt2_rlhf.space.votes:cli", args)
    except (ConfigError, StageError, FileNotFoundError, ValueError, OSError) as e:
        # A problem the user can fix: one line, no traceback (use -v for one).
        if args.verbose:
            logger.exception("failed")
        # Library errors (transformers, pyarrow) can span lines: join them, so the
        # error is always exactly one line.
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"rlhf {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlhf {args.command}: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
