"""Build the book: execute every page through papermill, then a strict Sphinx build.

``python -m collapse.book --profile cpu`` (what ``make book`` runs):

1. copies the book's sources to ``_build/stage``;
2. executes each notebook page of ``_toc.yml`` (MyST Markdown, read with jupytext)
   through papermill with ``profile`` and ``seed`` injected, hides papermill's
   injected-parameters cell, and writes the executed ``.ipynb`` in place of the ``.md``;
   ``--jobs`` chapters at a time (:data:`DEFAULT_JOBS`), each in its own kernel;
3. records the profile and execution times in ``_build/stage/_execution.json`` for the
   reproducibility page (executed last);
4. runs ``jupyter-book build -W -n --keep-going`` on the stage; HTML lands in ``_build/html``.

A page that cannot run because a data set is missing (``CorpusUnavailable``,
``DataUnavailable``) does not take the book down: it is rendered as a notice saying what is
missing and how to get it, the other pages are built, and the build ends with a summary of
such pages (``--require-data``, which ``.ci/run`` uses, makes it a failure instead). One build
at a time per folder (a lock in ``_build``), and the driver's child processes (kernels,
Sphinx) stop when it is stopped or when the ``make`` that started it is killed.

This module is also the Sphinx extension (``sphinx.extra_extensions`` in ``_config.yml``)
that serves MathJax from the build, so equations render without a network.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import PROFILES
from .paths import compilation_cache_environment

BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib", "constraints.txt")
LAST_PAGES = ("reproducibility",)  # executed after the chapters: they report on them
# Chapters executed at once. Alone, a chapter's kernel keeps 1.34 (vae) to 1.76 (lm) of 2 cores busy on
# average (a cpu build, sampled every 5 s; XLA:CPU runs many small ops on one thread), so a second page
# fills the idle core: the cpu chapters took 48.7 min two at a time against 57.9 min one at a time (2-core
# EPYC). Each running page's kernel is pinned to its own share of the CPUs (:func:`cpu_shares`): XLA:CPU
# sizes its thread pool to the CPUs a process may use, so two unpinned pages on 2 cores ran 4 threads
# that spun waiting for each other. The mixtures page's multivariate section took 476 s beside the LM
# pretraining in a fresh-clone build, 140 s beside it measured alone (144 s of CPU; 45 s with both cores
# to itself), and 61-66 s pinned to one core (67 s of CPU); the pretraining ran 2.3 steps/s pinned, 2.2 in
# that build. The thread count sets the rounding of XLA's parallel sums, so numbers are bit-identical for
# the same machine and the same ``jobs``.
DEFAULT_JOBS = 2
MISSING_DATA_ERRORS = ("CorpusUnavailable", "DataUnavailable")  # a page that raises these is shown as a notice


class BuildInProgress(RuntimeError):
    """Another build holds this folder's ``_build``."""


def is_notebook(path: Path) -> bool:
    """A MyST Markdown page with a jupytext/kernelspec header is a notebook."""
    head = path.read_text(encoding="utf-8")[:2000]
    return head.startswith("---") and "kernelspec:" in head


def toc_pages(root: Path) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (root included), in book order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return pages


CHAPTER_TABLE_MARKER = "<!-- chapter table:"


def front_matter(path: Path) -> dict:
    """The YAML front matter of a MyST page ({} when it has none)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}


def prerequisites(root: Path, page: str) -> tuple[str, ...]:
    """The pages whose stored results ``page`` reads (``book.after`` in its front matter): a build
    executes it only once they have finished, however many pages run at once."""
    after = (front_matter(root / f"{page}.md").get("book") or {}).get("after") or []
    return tuple([after] if isinstance(after, str) else after)


def chapter_table(root: Path) -> str:
    """The intro's table of chapters: every page of ``_toc.yml`` under ``chapters/``, in order,
    with the ``book.model`` and ``book.shows`` of its own front matter (so it cannot go stale)."""
    rows = ["| Chapter | Model | What it shows |", "|---|---|---|"]
    for page in toc_pages(root):
        source = root / f"{page}.md"
        if not page.startswith("chapters/"):
            continue
        about = front_matter(source).get("book") or {}
        missing = [key for key in ("model", "shows") if not about.get(key)]
        if missing:
            raise ValueError(f"{source}: its front matter needs book.{' and book.'.join(missing)} for the intro's table")
        rows.append(f"| {{doc}}`{page}` | {about['model']} | {about['shows']} |")
    return "\n".join(rows)


def with_chapter_table(text: str, root: Path) -> str:
    """``text`` with its chapter-table marker line (if any) replaced by :func:`chapter_table`."""
    lines = text.split("\n")
    return "\n".join(chapter_table(root) if line.startswith(CHAPTER_TABLE_MARKER) else line for line in lines)


def execute_page(source: Path, target: Path, parameters: dict, cwd: Path) -> float:
    """Execute one MyST notebook through papermill; return seconds taken."""
    import jupytext
    import nbformat
    import papermill

    notebook = jupytext.read(source)
    raw = target.with_suffix(".input.ipynb")
    nbformat.write(notebook, raw)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(raw), str(target), parameters=parameters, cwd=str(cwd), kernel_name="python3", progress_bar=False
        )
    finally:
        raw.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    executed = nbformat.read(target, as_version=4)
    for cell in executed.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]  # the page says its profile in prose
    nbformat.write(executed, target)
    return seconds


def version_table(constraints: Path, packages: list[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(package, installed, locked)`` rows for ``packages``, and every locked package whose
    installed version differs from ``constraints`` (pip's ``name==version`` lines)."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name).split("+")[0]  # 2.13.0+cpu is the locked 2.13.0
        except metadata.PackageNotFoundError:
            return "not installed"

    locked = {}
    if constraints.is_file():
        for line in constraints.read_text().splitlines():
            name, sep, version = line.partition("==")
            if sep and not line.startswith("#"):
                locked[name.strip().lower().replace("_", "-")] = version.strip()
    rows = [(name, installed(name), locked.get(name.lower(), "not locked")) for name in packages]
    differ = [f"{name} {installed(name)} (locked {version})" for name, version in locked.items()
              if installed(name) not in (version, "not installed")]
    return rows, differ


def provenance(root: Path, profile: str, seed: int) -> dict[str, str]:
    """What made this build's numbers and figures: profile, seed, commit, library version, device, date."""
    import datetime

    import jax

    from . import __version__

    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += "+uncommitted changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("COLLAPSE_COMMIT", "unknown")
    device = jax.devices()[0]
    return {"profile": profile, "seed": seed, "commit": commit, "version": __version__,
            "device": f"{device.platform}: {getattr(device, 'device_kind', device.platform)} x{jax.device_count()}",
            "date": datetime.date.today().isoformat()}


def page_environment(root: Path) -> dict[str, str]:
    """Where the executed pages find their folders: the pages run in ``_build/stage``, where
    ``book_root()`` is the stage, so everything that lives in the sources is named here."""
    build_dir = root / "_build"
    return {
        "COLLAPSE_FIGURES_DIR": str(build_dir / "figures"),
        "COLLAPSE_RESULTS_DIR": os.environ.get("COLLAPSE_RESULTS_DIR", str(build_dir / "results")),
        "COLLAPSE_DATA_DIR": os.environ.get("COLLAPSE_DATA_DIR", str(root / "data")),
        "COLLAPSE_RECORDED_DIR": str(root / "chapters" / "recorded"),
        "COLLAPSE_SOURCE_DIR": str(root),  # pages name the sources' folders relative to it (paths.shown)
        **compilation_cache_environment(root),  # a page's programs compiled once for every build and test run
    }


def stand_in_page(source: Path, admonition: str) -> str:
    """What the build shows for a page it did not execute: the page's label and title, then
    ``admonition`` (MyST), so that the table of contents and links to the page still resolve."""
    head = []
    for line in source.read_text(encoding="utf-8").split("---", 2)[-1].lstrip().splitlines():
        head.append(line)
        if line.startswith("# "):
            break
    return "\n".join(head) + "\n\n" + admonition


def notice_page(source: Path, message: str) -> str:
    """A page that could not run: a warning with what is missing and how to get it."""
    return stand_in_page(source, "```{warning}\nThis page could not be executed because a data set it needs is "
                         f"missing:\n\n{message}\n\nGet the data as the message says (the README's *Where things land* "
                         "lists every data set), then run `make book` again.\n```\n")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; elsewhere none are found)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop_descendants() -> None:
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _stop_children(*_) -> None:
    _stop_descendants()
    os._exit(1)


def _own_children() -> None:
    """Stop every child (kernels, Sphinx) when this process is stopped, or when its parent (``make``)
    dies, which leaves it re-parented: a killed ``make book`` leaves nothing running."""
    signal.signal(signal.SIGTERM, _stop_children)
    signal.signal(signal.SIGHUP, _stop_children)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        print("[book] the process that started this build has gone; stopping", file=sys.stderr, flush=True)
        _stop_children()

    threading.Thread(target=watch, daemon=True).start()


_build_locks: list = []  # the open lock files of this process's builds (closing one releases its lock)


def _lock_build(build_dir: Path) -> None:
    """Hold ``_build/.book.lock`` for the whole build; a second build in the same folder is refused."""
    build_dir.mkdir(parents=True, exist_ok=True)
    handle = open(build_dir / ".book.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BuildInProgress(f"another book build (pid {holder}) is running in {build_dir.parent}; wait for it to "
                              "finish or stop it, then run this again") from None
    handle.seek(0), handle.truncate(), handle.write(str(os.getpid())), handle.flush()
    _build_locks.append(handle)


def build(root: Path, profile: str, seed: int, pages: list[str] | None, strict: bool = True,
          require_data: bool = False, pdf: bool = False, jobs: int = 1) -> int:
    build_dir = root / "_build"
    _lock_build(build_dir)
    stage = build_dir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name in BOOK_FILES:
        if (root / name).exists() or name in ("_config.yml", "_toc.yml"):
            shutil.copy2(root / name, stage / name)
    if (root / "_static").is_dir():  # reader.css: wide equations and tables scroll on a phone
        shutil.copytree(root / "_static", stage / "_static")

    env_vars = page_environment(root)
    os.environ.update(env_vars)
    if jobs > 1:  # JAX takes 75 % of a GPU's memory when it starts: pages sharing one GPU take theirs as they go
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    all_pages = toc_pages(root)
    selected = set(pages or all_pages) | set(LAST_PAGES)
    ordered = [p for p in all_pages if p not in LAST_PAGES] + [p for p in all_pages if p in LAST_PAGES]
    cpus = len(os.sched_getaffinity(0)) if pins_pages(jobs) else None  # None: the pages were not pinned
    record = {"profile": profile, "seed": seed, "jobs": jobs, "cpus": cpus, "pages": {}}
    missing: dict[str, str] = {}
    notebooks = []
    for page in ordered:
        source = root / f"{page}.md"
        target = stage / f"{page}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not is_notebook(source):
            target.write_text(with_chapter_table(source.read_text(encoding="utf-8"), root), encoding="utf-8")
        elif page in selected:
            notebooks.append(page)
        else:  # --pages: the others stand in by title, so that the strict build's links resolve
            target.write_text(stand_in_page(source, "```{note}\nThis build executed only "
                                            f"{', '.join(sorted(set(pages)))}; `make book` executes every page.\n```\n"),
                              encoding="utf-8")
    chapters = [p for p in notebooks if p not in LAST_PAGES]
    for page in notebooks:
        unknown = [p for p in prerequisites(root, page) if p not in all_pages]
        if unknown:
            raise ValueError(f"{page}.md: book.after names {unknown}, which are not pages of {root / '_toc.yml'}")
    start = time.perf_counter()
    parameters = {"profile": profile, "seed": seed}
    seconds = _execute_pages(root, stage, chapters, parameters, jobs, require_data, missing)
    record["execution_seconds"] = round(time.perf_counter() - start, 1)  # of all chapters, however many ran at once
    record["pages"] = {p: seconds[p] for p in chapters if p in seconds}  # in book order
    (stage / "_execution.json").write_text(json.dumps(record, indent=2))
    last = _execute_pages(root, stage, [p for p in notebooks if p in LAST_PAGES], parameters, 1, require_data, missing)
    record["pages"].update(last)
    record["missing_data"] = missing
    (stage / "_execution.json").write_text(json.dumps(record, indent=2))

    # What the pages produced: every glued number with its provenance, and the figure gallery.
    from . import gallery, numbers
    from .paths import figures_dir

    made = provenance(root, profile, seed)
    executed = [p for p in ordered if p in record["pages"]]
    glued = numbers.collect(stage, executed, made)
    (build_dir / "numbers.json").write_text(json.dumps(glued, indent=1, sort_keys=True, default=str) + "\n")
    (stage / "figures.md").write_text(gallery.build_page(stage, figures_dir(), executed, made), encoding="utf-8")

    status = _jupyter_book_build(stage, root, "--keep-going", *(["-W", "-n"] if strict else []))
    problems = numbers.check_html(build_dir / "html", glued) if status == 0 else []
    for problem in problems:
        print(f"[book] NUMBER NOT IN numbers.json: {problem}", flush=True)
    status = status or (1 if problems else 0)
    for page, why in missing.items():
        print(f"[book] NOT RUN: {page}: a data set is missing: {why}", flush=True)
    if missing:
        print(f"[book] {len(missing)} page(s) are notices instead of results; --require-data makes this an error",
              flush=True)
    if pdf and status == 0:
        status = build_pdf(stage, root)
    _build_locks.pop().close()
    return status


def pins_pages(jobs: int) -> bool:
    """Whether pages run ``jobs`` at a time are pinned to CPU shares: with two or more, on Linux
    (elsewhere every page has every CPU)."""
    return jobs > 1 and hasattr(os, "sched_setaffinity")


def cpu_shares(cpus, jobs: int) -> list[frozenset[int]]:
    """The CPUs of each of ``jobs`` page slots: runs of ``len(cpus) // jobs`` of ``cpus``, disjoint.

    Every share has the same size, so a page's thread count, and with it the rounding of its
    numbers, does not depend on the slot it happens to get; CPUs left over (5 cores, 2 jobs)
    stay idle. A CPU is shared only where the slots outnumber the CPUs.
    """
    cpus = sorted(cpus)
    if jobs >= len(cpus):
        return [frozenset({cpus[slot % len(cpus)]}) for slot in range(jobs)]
    size = len(cpus) // jobs
    return [frozenset(cpus[slot * size:(slot + 1) * size]) for slot in range(jobs)]


def _execute_pages(root: Path, stage: Path, pages: list[str], parameters: dict, jobs: int, require_data: bool,
                   missing: dict[str, str]) -> dict[str, float]:
    """Execute ``pages`` (of the stage), ``jobs`` at a time; returns each executed page's seconds.

    A page whose data set is missing becomes a notice (its message lands in ``missing``) unless
    ``require_data``; any other failure stops the pages still running and is raised. Pages run in
    threads, each with its own kernel process; pages of one folder run together, because papermill
    starts a kernel in the driver's working directory, which it sets to the page's folder. A page
    starts when a worker is free and its :func:`prerequisites` among ``pages`` have finished: the
    first such page in book order, pages that others wait for first. A prerequisite and the page
    that reads it run one after the other, so starting the prerequisite early shortens the build:
    at ``cpu`` the LM chapter and the avoiding page that reads it took 1,964 s and 390 s of a
    fresh-clone build on 2 cores, the longest path of the build. With ``jobs`` > 1 a page's kernel
    runs on its slot's CPUs (:func:`cpu_shares`; see :data:`DEFAULT_JOBS`): the worker thread pins
    itself before papermill starts the kernel, which inherits the pin.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .numbers import MYST_SOURCES  # the page's footer offers its MyST source for download

    seconds: dict[str, float] = {}
    pinned = pins_pages(jobs)
    shares = cpu_shares(os.sched_getaffinity(0), jobs) if pinned else []
    unfinished = set(pages)
    waits_for = {page: set(prerequisites(root, page)) & unfinished for page in pages}
    here = os.getcwd()
    for folder, group in itertools.groupby(pages, key=lambda page: (stage / page).parent):
        group = list(group)

        def one(page: str, slot: int) -> float:
            source, target = root / f"{page}.md", stage / f"{page}.md"
            if pinned:  # this thread only (pid 0): the kernel it starts inherits the pin, the driver does not
                os.sched_setaffinity(0, shares[slot])
            # one write, newline included: two workers' lines printed at once ran together
            sys.stdout.write(f"[book] executing {page} (profile={parameters['profile']})\n")
            sys.stdout.flush()
            (target.parent / MYST_SOURCES).mkdir(exist_ok=True)
            shutil.copy2(source, target.parent / MYST_SOURCES / source.name)
            return execute_page(source, target.with_suffix(".ipynb"), parameters, target.parent)

        os.chdir(folder)
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                awaited = set().union(*(waits_for[p] for p in group))
                queue, running = sorted(group, key=lambda p: p not in awaited), {}  # stable: book order otherwise
                slots = {}  # future -> the slot (CPU share) its page holds
                try:
                    while queue or running:
                        while len(running) < jobs:  # a page starts when one has ended: none after a failure
                            page = next((p for p in queue if not waits_for[p] & unfinished), None)
                            if page is None:
                                break
                            queue.remove(page)
                            slot = min(set(range(jobs)) - set(slots.values()))
                            future = pool.submit(one, page, slot)
                            running[future], slots[future] = page, slot
                        if not running:
                            raise ValueError(f"{', '.join(queue)} wait for pages that cannot run before them: "
                                             f"{', '.join(sorted(set().union(*(waits_for[p] for p in queue))))}")
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                        for future in sorted(done, key=lambda f: group.index(running[f])):
                            page, error = running.pop(future), future.exception()
                            slots.pop(future)
                            unfinished.discard(page)
                            if error is None:
                                seconds[page] = round(future.result(), 1)
                                print(f"[book] {page}: {future.result():.1f} s", flush=True)
                            elif getattr(error, "ename", None) in MISSING_DATA_ERRORS and not require_data:
                                missing[page] = str(getattr(error, "evalue", error))
                                _notice_instead(root, stage, page, missing[page])
                            else:
                                raise error
                except BaseException:  # a failure or Ctrl-C: stop the pages still running (their kernels), then stop
                    if running:
                        _stop_descendants()
                    raise
        finally:
            os.chdir(here)
    return seconds


def _notice_instead(root: Path, stage: Path, page: str, message: str) -> None:
    """Stage ``page`` as :func:`notice_page` (its data set is missing) instead of its results."""
    target = stage / f"{page}.md"
    target.with_suffix(".ipynb").unlink(missing_ok=True)
    target.write_text(notice_page(root / f"{page}.md", message), encoding="utf-8")
    print(f"[book] {page}: could not run, data missing ({message.splitlines()[0][:200]})", flush=True)


def _jupyter_book_build(stage: Path, root: Path, *flags: str) -> int:
    """``jupyter-book build`` of the stage into ``root/_build`` (this environment's, if it has one)."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(stage),
               "--path-output", str(root), *flags]
    print("[book] " + " ".join(command), flush=True)
    return subprocess.call(command)


# What `make pdf` needs beside the Python packages: Sphinx's LaTeX through XeLaTeX and latexmk.
TEX_PROGRAMS = ("xelatex", "latexmk")
TEX_FILES = ("fncychap.sty", "tabulary.sty", "capt-of.sty", "needspace.sty", "FreeSerif.otf")
TEX_PACKAGES_DEBIAN = ("texlive-xetex texlive-latex-extra texlive-fonts-recommended latexmk fonts-freefont-otf "
                       "tex-gyre lmodern")
TEX_PACKAGES_CONDA = "texlive-core latexmk (conda-forge), or a full TeX Live"


def missing_tex() -> list[str]:
    """The TeX programs and files ``make pdf`` needs and cannot find (empty when it can build)."""
    missing = [p for p in TEX_PROGRAMS if shutil.which(p) is None]
    if missing or shutil.which("kpsewhich") is None:
        return missing or ["kpsewhich"]
    for name in TEX_FILES:
        found = subprocess.run(["kpsewhich", name], capture_output=True, text=True).stdout.strip()
        if not found and name.endswith(".otf"):
            found = subprocess.run(["fc-list", f":file={name}"], capture_output=True, text=True).stdout.strip() \
                if shutil.which("fc-list") else ""
        if not found:
            missing.append(name)
    return missing


def build_pdf(stage: Path, root: Path) -> int:
    """The whole book as one PDF through Jupyter Book's LaTeX builder: ``_build/latex/book.pdf``.

    Runs on the stage the HTML was built from, so both show the same executed pages.
    """
    status = _jupyter_book_build(stage, root, "--builder", "pdflatex")
    pdf = root / "_build" / "latex" / "book.pdf"
    if status == 0 and pdf.is_file():
        print(f"[book] PDF: {pdf}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=PROFILES, help="size of every experiment")
    parser.add_argument("--seed", type=int, default=0, help="the integer seed every chapter derives its randomness from")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the book's folder (holding _toc.yml)")
    parser.add_argument("--pages", nargs="*", help="execute only these pages (e.g. chapters/gaussian)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"pages executed at once, each in its own kernel (default {DEFAULT_JOBS}; see DEFAULT_JOBS)")
    parser.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    parser.add_argument("--require-data", action="store_true",
                        help="fail when a page cannot run for a missing data set (default: show a notice, build the rest)")
    parser.add_argument("--pdf", action="store_true", help="also build the whole book as _build/latex/book.pdf (needs TeX)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.seed < 0 or args.seed >= 2**32:
        parser.error(f"--seed {args.seed}: seeds are integers in [0, 2**32)")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: at least one page must run at a time")
    known = toc_pages(root)
    unknown = [p for p in args.pages or [] if p not in known]
    if unknown:
        parser.error(f"--pages {' '.join(unknown)}: not pages of {root / '_toc.yml'}; choose from {' '.join(known)}")
    no_tex = missing_tex() if args.pdf else []
    if no_tex:
        parser.error(f"--pdf needs TeX, and {', '.join(no_tex)} cannot be found. On Debian or Ubuntu: "
                     f"apt-get install {TEX_PACKAGES_DEBIAN}; with conda: {TEX_PACKAGES_CONDA}")
    _own_children()
    try:
        return build(root, args.profile, args.seed, args.pages, strict=not args.no_strict, require_data=args.require_data,
                     pdf=args.pdf, jobs=args.jobs)
    except BuildInProgress as error:
        print(f"[book] {error}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- Sphinx extension

MATHJAX_FILE = "mathjax/tex-svg.js"  # self-contained: the SVG output needs no web fonts


def _mathjax_source() -> Path:
    from importlib.resources import files

    return Path(str(files("mathjax"))) / "static" / "mathjax" / "es5" / "tex-svg.js"


def _use_local_mathjax(app, config) -> None:
    config.mathjax_path = MATHJAX_FILE


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / MATHJAX_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_mathjax_source(), target)


IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".pdf")


def _alt_text_from_captions(app, doctree, docname) -> None:
    """Give every figure's image without alt text its caption as alt text (screen readers,
    and the text shown where an image cannot load)."""
    from docutils import nodes

    for figure in doctree.findall(nodes.figure):
        captions = list(figure.findall(nodes.caption))
        if not captions:
            continue
        text = " ".join(captions[0].astext().split())
        for image in figure.findall(nodes.image):
            alt = image.get("alt", "")
            # myst-nb writes the image's file name as its alt text; that says nothing to a reader
            if not alt or alt == image.get("uri") or alt.lower().endswith(IMAGE_SUFFIXES):
                image["alt"] = text


def setup(app):
    if not _mathjax_source().is_file():
        raise RuntimeError("MathJax files not found: pip install django-static-mathjax (the 'book' extra)")
    app.connect("config-inited", _use_local_mathjax, priority=900)
    app.connect("build-finished", _copy_mathjax)
    app.connect("doctree-resolved", _alt_text_from_captions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main())
