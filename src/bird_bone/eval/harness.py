"""Run EleutherAI lm-evaluation-harness tasks on an in-memory model, offline-friendly.

``run_lm_eval`` wraps a loaded ``(model, tokenizer)`` in lm-eval's ``HFLM`` and runs
``lm_eval.simple_evaluate`` once per requested task, returning a small JSON-serialisable dict
``{task: {metric: number}}``. The project's own tasks (``eval/tasks/``) need no network:

- ``bird_bone_canary``: 32 easy 4-way multiple-choice completions (metrics ``acc``, ``acc_norm``), in
  the form the model is run in: ``bird_bone_canary_chat`` (through its chat template) for an
  instruction model, one whose tokenizer has a chat template, ``bird_bone_canary_base`` (plain text
  continuation) otherwise, e.g. for Gemma 3 270M. Its result says which (``chat_template``: 1 or 0);
  either form can also be asked for by name;
- ``bird_bone_local_ppl``: rolling log-likelihood over one local text file (``local_text``), read
  whole as one document. Besides lm-eval's word/byte perplexities its result carries
  ``loglikelihood`` (total, nats), ``tokens`` (tokens predicted) and ``token_perplexity``, the
  quantity ``bird_bone.eval.perplexity`` measures (see ``rolling_token_perplexity``).

Any other lm-eval task (``arc_easy``, ``hellaswag``, ``mmlu``...) passes through by name. When the
Hugging Face hub cannot be reached, such tasks run in datasets' offline mode (cached datasets still
load) so that a missing dataset fails at once with an ``EvaluationError`` instead of retrying.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

import yaml

from bird_bone.errors import EvaluationError

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
CANARY_TASK = "bird_bone_canary"  # resolved by the model to one of the two forms below
CANARY_BASE_TASK = "bird_bone_canary_base"
CANARY_CHAT_TASK = "bird_bone_canary_chat"
LOCAL_PPL_TASK = "bird_bone_local_ppl"
LOCAL_TASKS = (CANARY_TASK, CANARY_BASE_TASK, CANARY_CHAT_TASK, LOCAL_PPL_TASK)
BOOTSTRAP_ITERS = 1000  # stderr bootstrap draws (lm-eval's CLI default, 100000, is slow on CPU)
_HUB_PROBE_TIMEOUT_S = 3.0


def run_lm_eval(
    model,
    tokenizer,
    tasks: list[str],
    *,
    limit: int | float | None = None,
    batch_size: int = 1,
    max_length: int | None = None,
    local_text: str | os.PathLike | None = None,
    num_fewshot: int | None = None,
) -> dict:
    """Evaluate ``model`` on lm-eval ``tasks``; returns ``{task: {metric: value}}`` (numbers only).

    ``local_text`` is the text file ``bird_bone_local_ppl`` scores; ``max_length`` is the window
    length of rolling tasks and the context limit of the others (default: the model's).
    """
    names = _check_task_names(tasks, local_text)
    resolved = {name: resolve_task(name, tokenizer) for name in names}
    manager = _task_manager(include_defaults=any(n not in LOCAL_TASKS for n in names))
    _check_known(list(resolved.values()), manager)
    lm = _wrap_model(model, tokenizer, batch_size, max_length)
    summary: dict[str, dict[str, float]] = {}
    for name, task in resolved.items():
        spec = _task_spec(task, manager, local_text)
        start = time.perf_counter()
        out = _evaluate(lm, task, spec, manager, limit=limit, num_fewshot=num_fewshot)
        results = _summarise(out, lm)
        if task in (CANARY_BASE_TASK, CANARY_CHAT_TASK):
            results[task]["chat_template"] = float(task == CANARY_CHAT_TASK)
        results[name] = results.pop(task)
        summary.update(results)
        log.info("lm-eval task %s (%s) done in %.1f s: %s", name, task, time.perf_counter() - start, summary[name])
    return summary


def resolve_task(name: str, tokenizer) -> str:
    """The task that runs for ``name``: ``bird_bone_canary`` becomes its chat form for a tokenizer
    with a chat template (an instruction model) and its base form otherwise; others are unchanged."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if name == CANARY_CHAT_TASK and not has_template:
        raise EvaluationError(
            f"lm-eval task '{CANARY_CHAT_TASK}' needs a tokenizer with a chat template; this one has none "
            f"(a base model: use '{CANARY_BASE_TASK}' or '{CANARY_TASK}')"
        )
    if name == CANARY_TASK:
        return CANARY_CHAT_TASK if has_template else CANARY_BASE_TASK
    return name


def rolling_token_perplexity(task_result: dict) -> float:
    """exp(-loglikelihood / tokens) of a rolling task's result from ``run_lm_eval``.

    lm-eval predicts every token of the document once (the first from the BOS/EOS prefix token),
    in disjoint windows of ``max_length`` that each see one token of the previous window. On a text
    that fills whole windows of the same length this agrees with ``bird_bone.eval.perplexity``
    to ~0.1 % (that protocol does not predict each window's first token); on other texts lm-eval
    also scores the tail that the project's complete windows drop.
    """
    if "loglikelihood" not in task_result or not task_result.get("tokens"):
        raise EvaluationError(f"not the result of a rolling (perplexity) lm-eval task: keys {sorted(task_result)}")
    return math.exp(-task_result["loglikelihood"] / task_result["tokens"])


def _check_task_names(tasks: list[str], local_text) -> list[str]:
    if isinstance(tasks, str):
        tasks = [tasks]
    names = [str(t).strip() for t in tasks or []]
    if not names or not all(names):
        raise EvaluationError(f"lm-eval needs at least one task name, got {tasks!r}")
    if LOCAL_PPL_TASK in names:
        _local_text_path(local_text)
    return list(dict.fromkeys(names))


def _local_text_path(local_text) -> Path:
    if local_text is None or not str(local_text).strip():
        raise EvaluationError(f"lm-eval task '{LOCAL_PPL_TASK}' needs local_text=<path of a text file>")
    path = Path(local_text).expanduser().resolve()
    if not path.is_file():
        raise EvaluationError(f"lm-eval task '{LOCAL_PPL_TASK}': local_text file not found: {path}")
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        raise EvaluationError(f"lm-eval task '{LOCAL_PPL_TASK}': local_text file is empty: {path}")
    return path


@functools.lru_cache(maxsize=2)
def _task_manager(include_defaults: bool):
    """lm-eval's task index, built once per process (indexing all of lm-eval's tasks takes ~20 s)."""
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)
    log.info("lm-eval task index: %d names in %.1f s", len(manager.all_tasks), time.perf_counter() - start)
    return manager


def _check_known(names: list[str], manager) -> None:
    import difflib

    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise EvaluationError(
                f"unknown lm-eval task '{name}'{hint}; the project's own tasks are {', '.join(LOCAL_TASKS)}"
            )


def _wrap_model(model, tokenizer, batch_size: int, max_length: int | None):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


def _task_spec(name: str, manager, local_text) -> str | dict:
    """A standard task's name, or a project task's config with its data file made absolute."""
    if name not in LOCAL_TASKS:
        return name
    yaml_path = Path(manager.task_index[name].yaml_path)
    config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    if name == LOCAL_PPL_TASK:
        data_file = _local_text_path(local_text)
    else:
        data_file = yaml_path.parent / config["dataset_kwargs"]["data_files"]["test"]
    config["dataset_kwargs"]["data_files"] = {"test": str(data_file)}
    return config


def _evaluate(lm, name: str, spec, manager, *, limit, num_fewshot) -> dict:
    from lm_eval import simple_evaluate

    offline = nullcontext() if name in LOCAL_TASKS or _hub_reachable() else _hub_offline()
    with offline:
        try:
            return simple_evaluate(
                model=lm,
                tasks=[spec],
                task_manager=manager,
                limit=limit,
                num_fewshot=num_fewshot,
                apply_chat_template=name == CANARY_CHAT_TASK,
                log_samples=True,
                bootstrap_iters=BOOTSTRAP_ITERS,
            )
        except _unreachable_errors() as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise EvaluationError(
                f"lm-eval task '{name}': its dataset is unreachable (not on a reachable hub nor in the "
                f"local datasets cache: {detail}); the project's local tasks ({', '.join(LOCAL_TASKS)}) "
                "work offline"
            ) from exc


def _hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connect within a few seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        log.info("Hugging Face hub %s unreachable: lm-eval datasets load from the local cache only", url.hostname)
        return False


@contextmanager
def _hub_offline():
    """datasets' and huggingface_hub's offline mode, for this block only (they read it at import)."""
    import datasets.config
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # datasets raises ConnectionError ("Couldn't reach ... on the Hub") when offline
    return ConnectionError, DatasetNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled


def _summarise(out: dict, lm) -> dict[str, dict[str, float]]:
    """Numbers only, ``,none`` suffixes dropped; rolling tasks also get loglikelihood and tokens."""
    summary = {}
    for task, metrics in out["results"].items():
        summary[task] = {
            key.removesuffix(",none"): float(value)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
    for task, samples in (out.get("samples") or {}).items():
        if out["configs"].get(task, {}).get("output_type") == "loglikelihood_rolling":
            loglikelihood = sum(float(s["resps"][0][0]) for s in samples)
            tokens = sum(len(lm.tok_encode(s["arguments"][0][0])) for s in samples)
            summary[task].update(loglikelihood=loglikelihood, tokens=tokens)
            if tokens:
                summary[task]["token_perplexity"] = rolling_token_perplexity(summary[task])
    return summary
