"""Recorded runs: summaries of profiles too expensive for the book's own build.

A chapter's ``paper`` profile may take hours on a GPU, so it is run outside the book
(``python -m collapse.vae_experiment --profile paper --record``) and its summary is
committed as ``chapters/recorded/<experiment>-<profile>-<dataset>-seed<k>.json``. The
page shows the record beside its own run, and says so when a record is missing or was
made with sizes other than today's ``chapter_config``.

A record is a JSON object with at least:

* ``args``: the arguments ``chapter_config`` was called with (profile, seed, options);
* ``chapter``: ``to_dict`` of the chapter config it ran, to compare with today's;
* ``environment``: device, JAX version, date and commit;
* ``streams``: the :data:`~collapse.runner.STREAMS_VERSION` it drew its randomness with
  (absent in records made before the named streams).

The rest (regimes, settings, …) is the experiment's own summary. A run added to an
existing record (:func:`extend`) carries its own ``environment`` and ``streams``.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Callable

from .config import to_dict
from .paths import recorded_dir, shown
from .runner import STREAMS_VERSION
from .store import atomic_write


def path(experiment: str, profile: str, dataset: str, seed: int) -> Path:
    return recorded_dir() / f"{experiment}-{profile}-{dataset}-seed{seed}.json"


def load(experiment: str, profile: str, dataset: str, seed: int) -> dict | None:
    """The record, or None if none was made."""
    return load_path(path(experiment, profile, dataset, seed))


def seeds(experiment: str, profile: str, dataset: str) -> list[int]:
    """The seeds recorded for ``(experiment, profile, dataset)``, in order."""
    found = recorded_dir().glob(f"{experiment}-{profile}-{dataset}-seed*.json")
    return sorted(int(p.stem.rsplit("-seed", 1)[1]) for p in found)


def environment() -> dict[str, str]:
    """Where a record was made: device, JAX version, date and commit (``COLLAPSE_COMMIT``)."""
    import jax

    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {getattr(device, 'device_kind', device.platform)} x{jax.device_count()}",
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
        "commit": os.environ.get("COLLAPSE_COMMIT", "unknown"),
    }


def new(chapter, args: dict, **summary) -> dict:
    """A record of ``chapter`` (made by ``chapter_config(**args)``), its environment and ``summary``."""
    return {"args": dict(args), "chapter": to_dict(chapter), "environment": environment(), "streams": STREAMS_VERSION,
            **summary}


def run_entry(**summary) -> dict:
    """One run's summary, with where and how it was made (a record may gather runs of several sittings)."""
    return {**summary, "environment": environment(), "streams": STREAMS_VERSION}


def extend(target: Path, fresh: dict, chapter_config: Callable, runs: str, per_run: tuple[str, ...] = ()) -> dict:
    """The record that new runs (under ``fresh[runs]``) are added to: the one at ``target`` when it
    was made with today's sizes, the same arguments and the same data, its runs kept; else ``fresh``.

    So ``--regimes X --record`` adds run X to a seed's record instead of dropping its others. Each
    kept run is given the fields of the sitting it was made in: its environment, its stream version
    and the ``per_run`` fields of the old record (a classifier trained in that sitting, say).
    """
    old = load_path(target)
    sitting = ("environment", "streams", *per_run)
    same = lambda k: old.get(k) == fresh[k]  # noqa: E731
    if old is None or not is_current(old, chapter_config) or not all(
            same(k) for k in fresh if k not in ("chapter", runs, *sitting)):  # chapter: is_current
        return fresh
    made_in = {k: old.get(k) for k in sitting} | {"streams": old.get("streams", 0)}  # 0: before named streams
    for entry in old[runs].values():
        for k, value in made_in.items():
            entry.setdefault(k, value)
    return old


def load_path(target: Path) -> dict | None:
    return json.loads(Path(target).read_text()) if Path(target).is_file() else None


def check_writable(target: Path) -> None:
    """Fail before any work if ``target`` cannot be written (a long run must not end in a bad path)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(target.parent, os.W_OK) or target.is_dir():
        raise ValueError(f"cannot write the record to {target}")


def write(target: Path, record: dict) -> None:
    """Write ``record`` atomically: a run cut short leaves the previous record whole."""
    atomic_write(Path(target), lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


# Chapter fields that list runs: a record may hold some of them (``--regimes``), so a record that
# lacks a run is incomplete, not made with other sizes.
RUN_LISTS = ("regimes",)


def _sizes(chapter: dict) -> dict:
    return {k: v for k, v in chapter.items() if k not in RUN_LISTS}


def is_current(record: dict, chapter_config: Callable) -> bool:
    """Whether ``record`` was made with the sizes ``chapter_config`` gives its arguments today
    (whichever of the chapter's runs it holds)."""
    return _sizes(record["chapter"]) == _sizes(to_dict(chapter_config(**record["args"])))


def run_streams(record: dict, entry: dict) -> int:
    """The stream derivation one run of ``record`` was drawn with (0: before the named streams)."""
    return entry.get("streams", record.get("streams", 0))


def sittings(found: dict[int, dict]) -> str:
    """Where and when the runs of these records were made, each sitting (device, JAX, date,
    commit) named once: "on gpu: … with JAX 0.11.2 on 2026-11-24 (commit `eda815e586`)"."""
    seen = []
    for record in found.values():
        for entry in record.get("regimes", {}).values() or [record]:
            env = entry.get("environment", record["environment"])
            if env not in seen:
                seen.append(env)
    return " and ".join(f"on {e['device']} with JAX {e['jax']} on {e['date']} (commit `{e['commit'][:10]}`)" for e in seen)


def status(experiment: str, profile: str, dataset: str, chapter_config: Callable, command: str) -> tuple[dict, str | None]:
    """``({seed: record}, note)``: every record of ``(experiment, profile, dataset)``, and a MyST
    note for the page when none exists or some are stale (``command`` makes them again)."""
    found = {s: load(experiment, profile, dataset, s) for s in seeds(experiment, profile, dataset)}
    if not found:
        return found, (f"```{{note}}\nNo recorded `{profile}` run of this chapter was found in `{shown(recorded_dir())}`. "
                       f"Make one with `{command}`.\n```")
    stale = [s for s, r in found.items() if not is_current(r, chapter_config)]
    if stale:
        return found, (f"```{{warning}}\nThe records of seeds {stale} were made with `{profile}` sizes that differ from "
                       f"today's `chapter_config`: make them again with `{command}`.\n```")
    older = [s for s, r in found.items() if r.get("streams", 0) != STREAMS_VERSION and not any(
        run_streams(r, entry) == STREAMS_VERSION for entry in r.get("regimes", {}).values())]
    partly = [f"seed {s}'s `{name}`" for s, r in found.items() if s not in older
              for name, entry in r.get("regimes", {}).items() if run_streams(r, entry) != STREAMS_VERSION]
    if older or partly:
        runs = [f"{', '.join(partly)} run{'s' if len(partly) > 1 else ''}"] if partly else []
        which = " and ".join(([f"the records of seeds {older}"] if older else []) + runs)
        many = bool(older) or len(partly) > 1
        were, their = ("were", "their") if many else ("was", "its")
        return found, (f"```{{note}}\n{which[0].upper() + which[1:]} {were} made with an earlier derivation of the "
                       f"book's random streams (before `collapse.runner.stream_key`): the same procedure and sizes, "
                       f"other random draws. Made again with `{command}`, {their} numbers move within {their} "
                       f"seed-to-seed spread.\n```")
    return found, None
