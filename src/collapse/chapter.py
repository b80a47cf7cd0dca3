"""The chapter protocol: what every chapter's entry module provides.

A chapter page (``chapters/<name>.md``) calls one entry module's

    chapter_config(profile, seed=0, **options) -> a frozen ``…Chapter``

and nothing else decides its sizes. ``profile`` and ``seed`` are checked the same way
everywhere (:func:`check_chapter`). The returned object satisfies :class:`Chapter`: it
knows its profile, the seeds it runs (:attr:`Chapter.seeds`; one chain per seed, or a
base seed for many chains), and describes itself for the page's "This page was executed
with…" note (:meth:`Chapter.describe`). A chapter that reads another chapter's stored
results does so through that chapter's own ``chapter_config(profile, seed)``, never by
rebuilding its keys in a page.

Entry modules: ``gaussian``, ``mixtures``, ``discrete``, ``vae_experiment``, ``lm_experiment``,
``avoiding`` and ``fairness`` (one per chapter page; see the package docstring).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .config import check_profile, check_seed


def check_chapter(profile: str, seed: int) -> None:
    """The checks every ``chapter_config`` makes first: a known profile, a seed in [0, 2**32)."""
    check_profile(profile)
    check_seed("seed", seed)


@runtime_checkable
class Chapter(Protocol):
    """What a chapter's config provides (every ``…Chapter`` dataclass satisfies it)."""

    profile: str  # ci / cpu / paper

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds the chapter runs, in order; the first is the page's ``seed`` parameter."""
        ...

    def describe(self, data=None) -> str:
        """MyST Markdown for the top of the page: the profile, seeds and sizes it ran with, and a
        warning for whatever the reader must know about its ``data`` (a fallback, unverified files)."""
        ...


def executed_note(body: str, notice: str | None = None) -> str:
    """The page's note ("This page was executed with …" + ``body``) and, if any, a warning."""
    note = f"```{{note}}\nThis page was executed with {body}\n```"
    return note + (f"\n```{{warning}}\n{notice}\n```" if notice else "")
