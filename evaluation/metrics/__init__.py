"""The report's metrics, each an `evaluate` module in `evaluation/metrics/<name>/<name>.py`.

    from gpt2_rlhf.evaluation.metrics import load_metric
    load_metric("reward").compute(scores=[...], bootstrap_samples=1000, seed=0)

Metric scripts import the package absolutely (`from gpt2_rlhf.evaluation.stats import ...`):
`evaluate` loads each from its own modules cache, where a relative import has no parent.
Modules are pure: they take per-response numbers or strings that
`evaluation/generate.py` computed with the models, and they share the bootstrap in
`evaluation/stats.py`. `load_metric` resolves, in order:

1. a module shipped here, by name (`reward`, `win_rate`, ...): loaded from its local
   path, so it works offline (the Hub's metric scripts are unreachable here);
2. a local path to a metric script or its folder;
3. a Hub metric id (`rouge`, `user/metric`): fetched by `evaluate.load`; offline this
   fails with one clear line instead of evaluate's "doesn't exist on the Hub".

evaluate copies a local script into its modules cache (`HF_MODULES_CACHE`) and
imports it from there, so a module may import from the installed `evaluation`
package but not relative to its own file. Loading a local module never touches
the network. When the modules cache cannot be written (a read-only home, a locked-
down Space), we fall back to a private cache under the temp directory.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS_DIR = Path(__file__).resolve().parent

LOCAL_METRICS = ("reward", "win_rate", "reward_improvement", "kl", "perplexity", "diversity", "response_stats",
                 "proxy_gold", "rm_accuracy")


class MetricLoadError(OSError):
    """A metric that could not be loaded; the message is one line naming it."""


def local_metric_path(name: str) -> Path | None:
    """The script of a shipped metric module, or None."""
    p = METRICS_DIR / name / f"{name}.py"
    return p if name and "/" not in name and p.is_file() else None


def _offline() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(v, "").upper() in truthy for v in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE"))


def load_metric(name_or_path: str | os.PathLike):
    """An `evaluate.EvaluationModule`: a shipped metric by name, a local script/folder, or a Hub metric id."""
    import evaluate

    name = str(name_or_path)
    local = local_metric_path(name)
    if local is None and Path(name).exists():
        p = Path(name)
        local = p if p.is_file() else p / f"{p.name}.py"
        if not local.is_file():
            raise MetricLoadError(f"metric {name!r}: no script {local.name} in that folder")
    if local is not None:
        return _load_local(local)
    shipped = ", ".join(LOCAL_METRICS)
    if _offline():
        raise MetricLoadError(f"metric {name!r}: not a shipped metric ({shipped}) nor a local path, and the Hub is "
                              "off (HF_HUB_OFFLINE/HF_EVALUATE_OFFLINE is set)")
    try:
        return evaluate.load(name, keep_in_memory=True)
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, ValueError... for one cause
        raise MetricLoadError(f"metric {name!r}: not a shipped metric ({shipped}) nor a local path, and not "
                              f"fetchable from the Hugging Face Hub (offline?): {type(e).__name__}") from None


def _load_local(script: Path):
    import evaluate

    try:
        # keep_in_memory: inputs go to an in-memory Arrow table, no cache files to clean up or lock
        return evaluate.load(str(script), keep_in_memory=True)
    except OSError as e:
        if e.errno is None:  # not a file-system failure (e.g. evaluate's own "couldn't find a script")
            raise
        logger.warning("evaluate's modules cache is not writable (%s); using a private one", e)
    # the modules cache is not writable: import the script from a private cache instead
    from evaluate.loading import evaluation_module_factory, import_main_class, init_dynamic_modules

    private = Path(tempfile.gettempdir()) / f"gpt2_rlhf_evaluate_{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    dynamic = init_dynamic_modules(name="gpt2_rlhf_metrics", hf_modules_cache=str(private / "modules"))
    module = evaluation_module_factory(str(script), dynamic_modules_path=dynamic)
    cls = import_main_class(module.module_path)
    return cls(keep_in_memory=True, hash=module.hash, cache_dir=str(private / "cache"))
