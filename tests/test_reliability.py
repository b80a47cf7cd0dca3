"""What a careless or unlucky user meets: other data, damaged files, two writers, bad inputs, kills.

Every case asserts the clear error or the correct recomputation, not merely "no crash".
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from collapse import book, lm_experiment, mnist, records, runner, store as store_module, text, vae, vae_experiment
from collapse.config import Regime
from collapse.store import DamagedEntry, ResultsStore, RunDir
from fixtures import digit_like_images, write_image_dataset, write_wikitext

TINY_VAE = vae.VAEConfig(image_shape=(8, 8), capacity=2, latent_dim=3, batch_size=16, epochs=1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_vae_run(n_generations=1):
    return vae_experiment.VAERun("fixture", 64, TINY_VAE, n_generations, Regime(), seed=1)


# --------------------------------------------------------------------------- results keyed by their data


def test_a_vae_result_from_damaged_data_is_never_served_for_the_real_data(tmp_path, monkeypatch):
    real = digit_like_images(64, 1, shape=(8, 8))[0]
    damaged = real.copy()
    damaged[:, :4] = 0  # the top half of every image blanked
    store = ResultsStore(tmp_path)
    config = tiny_vae_run()
    on_damaged = vae_experiment.run(config, damaged, store=store, progress=False)
    trained = []
    original = vae.train
    monkeypatch.setattr(vae, "train", lambda *a, **k: trained.append(1) or original(*a, **k))
    on_real = vae_experiment.run(config, real, store=store, progress=False)
    assert len(trained) == 2  # both generations trained again on the real images
    assert on_real[0]["train_loss"] != on_damaged[0]["train_loss"]
    assert vae_experiment.run_folder(config, real, store).path != vae_experiment.run_folder(config, damaged, store).path
    vae_experiment.run(config, real, store=store, progress=False)
    assert len(trained) == 2  # and the real data's own result is reused


def test_other_text_gives_other_keys_and_another_tokenizer(tmp_path):
    write_wikitext(tmp_path / "data", n_lines=(120, 20, 20))
    corpus = text.load_wikitext(tmp_path / "data", download=False)
    altered = corpus._replace(train=corpus.train[:-1] + [corpus.train[-1] + " altered"])
    assert lm_experiment.tokenizer_path(corpus, 300) != lm_experiment.tokenizer_path(altered, 300)
    tokenizer = text.train_bpe(corpus.train, 300, tmp_path / "bpe.json")
    blocks = text.to_blocks(tokenizer, corpus.train, bos_id=2, block_size=16)
    data = lm_experiment.LMData(corpus, tokenizer, blocks[:16], blocks[16:24], blocks[24:32], None)
    config = lm_experiment.LMRun("wikitext-2", "tokenized", "bpe-300", 16, 8)
    altered_blocks = data.train.copy()
    altered_blocks[0, 1] += 1  # one token of one training block
    changed = dataclasses.replace(data, train=altered_blocks)
    assert lm_experiment.run_folder(config, data, ResultsStore(tmp_path)).path != \
        lm_experiment.run_folder(config, changed, ResultsStore(tmp_path)).path


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_an_empty_wikitext_split_fails_at_load_naming_the_file(tmp_path, split):
    folder = write_wikitext(tmp_path / "data", n_lines=(60, 10, 10))
    (folder / f"{split}.txt").write_text(" \n \n")
    with pytest.raises(text.CorpusDamaged, match=rf"{split}\.txt holds no text"):
        text.load_wikitext(tmp_path / "data", download=False)
    assert not list(tmp_path.rglob("*bpe*"))  # no tokenizer was trained, let alone stored


def test_non_utf8_wikitext_names_the_file(tmp_path):
    folder = write_wikitext(tmp_path / "data", n_lines=(60, 10, 10))
    (folder / "valid.txt").write_bytes(b" caf\xe9 au lait \n")
    with pytest.raises(text.CorpusDamaged, match=r"valid\.txt is not UTF-8"):
        text.load_wikitext(tmp_path / "data", download=False)


def test_unverified_wikitext_is_said_on_the_page(tmp_path, monkeypatch):
    write_wikitext(tmp_path / "data", n_lines=(200, 30, 30))
    monkeypatch.setenv("COLLAPSE_DATA_DIR", str(tmp_path / "data"))
    data = lm_experiment.load_data("wikitext-2", init="scratch", vocab_size=300, block_size=16)
    assert not data.corpus.verified and "do not match the published checksums" in data.notice


def test_mnist_test_split_missing_is_an_error_not_a_mixed_data_set(tmp_path):
    folder = write_image_dataset(tmp_path / "data", "mnist", n_train=40, n_test=30)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).unlink()
    with pytest.raises(mnist.DataUnavailable, match="test split could not be had"):
        mnist.load_data("mnist", 20, root=tmp_path / "data", allow_download=False)


# --------------------------------------------------------------------------- inputs checked before the long work


@pytest.mark.parametrize("seed", [-1, 2**32, 2**63])
def test_seeds_outside_32_bits_are_refused_with_a_message(seed):
    with pytest.raises(ValueError, match=r"must be an integer in \[0, 2\*\*32\)"):
        dataclasses.replace(tiny_vae_run(), seed=seed)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*32\)"):
        lm_experiment.LMRun(seed=seed)


def test_command_lines_fail_before_loading_any_data(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data were loaded before the inputs were checked")

    monkeypatch.setattr(vae_experiment, "load_data", no_data)
    monkeypatch.setattr(lm_experiment, "load_data", no_data)
    with pytest.raises(ValueError, match="seed"):
        lm_experiment.main(["--profile", "ci", "--seed", "-1", "--quiet"])
    (tmp_path / "a-file").write_text("")
    with pytest.raises((ValueError, OSError)):
        vae_experiment.main(["--profile", "ci", "--record", str(tmp_path / "a-file" / "record.json"), "--quiet"])
    with pytest.raises(ValueError, match="regime"):
        vae_experiment.main(["--profile", "ci", "--regimes", "recycle", "--quiet"])


def test_negative_sizes_and_zero_generations_are_refused():
    with pytest.raises(ValueError, match="n_valid"):
        lm_experiment.LMRun(n_valid=-5)
    with pytest.raises(ValueError, match="n_train"):
        lm_experiment.LMRun(n_train=-1)
    with pytest.raises(ValueError, match="n_generations"):
        runner.log_generations(0, 5)


# --------------------------------------------------------------------------- integrity of stored files


def flip_a_byte(path: Path, at: int = -10) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["samples.npy", "params.npz", "metrics.json"])
def test_a_flipped_byte_in_a_generation_is_caught_set_aside_and_recomputed(tmp_path, name):
    real = digit_like_images(64, 1, shape=(8, 8))[0]
    store = ResultsStore(tmp_path)
    config = tiny_vae_run()
    first = vae_experiment.run(config, real, store=store, progress=False)
    folder = vae_experiment.run_folder(config, real, store)
    before = folder.load_generation(1)
    flip_a_byte(folder.path / "gen-0001" / name, at=-2 if name == "metrics.json" else -10)
    with pytest.raises(DamagedEntry, match=name):
        folder.verify_generation(1)
    with pytest.warns(UserWarning, match=f"gen-0001.*damaged.*{name}"):
        again = vae_experiment.run(config, real, store=store, progress=False)
    assert again == first
    np.testing.assert_array_equal(folder.load_generation(1)["samples"], before["samples"])
    assert list(folder.path.glob("gen-0001.damaged-*"))  # kept as evidence, never used


@pytest.mark.parametrize("damage", ["flip", "truncate", "checksum missing"])
def test_a_damaged_stored_result_is_set_aside_and_computed_again(tmp_path, damage):
    store = ResultsStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(1000.0)}

    def spoil(path):
        if damage == "flip":
            flip_a_byte(path, at=len(path.read_bytes()) // 2)
        elif damage == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        else:
            path.with_name("result.npz.sha256").unlink()

    store.cached("exp", "1", {"a": 1}, compute)
    path = store.folder("exp", "1", {"a": 1}) / "result.npz"
    spoil(path)
    with pytest.warns(UserWarning, match="result.npz was damaged"):
        again = store.cached("exp", "1", {"a": 1}, compute)
    np.testing.assert_array_equal(again["x"], np.arange(1000.0))
    assert len(calls) == 2 and list(path.parent.glob("result.npz.damaged-*"))
    spoil(path)
    with pytest.warns(UserWarning, match="result.npz was damaged"):
        assert store.stored("exp", "1", {"a": 1}) is None  # reading alone never serves it


def test_leftover_scratch_of_a_killed_writer_is_cleaned_on_the_next_open(tmp_path):
    store = ResultsStore(tmp_path)
    folder = store.folder("exp", "1", {"a": 1})
    (folder / ".gen-0003.abcd").mkdir()
    (folder / ".gen-0003.abcd" / "params.npz").write_bytes(b"x" * 1000)
    (folder / ".result.npz.1234.tmp").write_bytes(b"half")
    store.cached("exp", "1", {"a": 1}, lambda: {"x": np.zeros(2)})
    assert not list(folder.glob(".gen-*")) and not list(folder.glob(".*.tmp"))


def test_stored_files_follow_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = ResultsStore(tmp_path)
        store.cached("exp", "1", {"a": 1}, lambda: {"x": np.zeros(2)})
        RunDir(tmp_path / "run").save_generation(0, params={"w": np.zeros(2)}, samples=np.zeros(3), metrics={})
    finally:
        os.umask(old)
    path = store.folder("exp", "1", {"a": 1}) / "result.npz"
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run" / "gen-0000").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "run" / "gen-0000" / "samples.npy").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- compiled programs

CACHED_PROGRAM = textwrap.dedent(
    """
    from collapse import gaussian
    from collapse.config import Regime
    run = gaussian.GaussianRun(n_samples=20, n_chains=8, n_generations=30, regime=Regime.parse("mix(0.3)"), sampler="draws")
    print([float(v).hex() for v in gaussian.run(run)["var"].ravel()])
    """
)


def test_a_program_from_the_compilation_cache_gives_the_numbers_of_a_fresh_compile(tmp_path):
    # The book and the tests load compiled programs from JAX's persistent cache (paths.
    # compilation_cache_environment). Three processes: no cache, one that fills it, one that loads.
    cache = tmp_path / "cache"
    script = tmp_path / "program.py"
    script.write_text(CACHED_PROGRAM)
    printed, hits, entries = {}, {}, {}
    for name, folder in (("fresh", ""), ("compiled", str(cache)), ("loaded", str(cache))):
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": folder, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
               "JAX_LOG_COMPILES": "1", "COLLAPSE_RESULTS_DIR": str(tmp_path / name)}
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        printed[name] = done.stdout
        hits[name] = done.stderr.count("Persistent compilation cache hit")
        entries[name] = sorted(p.name for p in cache.glob("*-cache")) if cache.is_dir() else []
    assert entries["fresh"] == [] and entries["compiled"], "the second process wrote its programs"
    assert hits["compiled"] == 0 and hits["loaded"] >= len(entries["compiled"]), "the third process loaded them"
    assert entries["loaded"] == entries["compiled"]
    assert printed["fresh"] == printed["compiled"] == printed["loaded"]


# --------------------------------------------------------------------------- two writers, one key

TWO_WRITERS = textwrap.dedent(
    """
    import sys, time, numpy as np
    from collapse.store import ResultsStore
    root, log = sys.argv[1], sys.argv[2]
    def compute():
        with open(log, "a") as f:
            f.write("computed\\n")
        time.sleep(2.0)  # long enough for the other process to arrive while this one works
        return {"x": np.arange(5.0)}
    print(ResultsStore(root).cached("exp", "1", {"k": 1}, compute)["x"].sum())
    """
)

TWO_RUNS = textwrap.dedent(
    """
    import sys, time, numpy as np, jax
    from collapse import runner
    from collapse.config import Regime
    from collapse.store import RunDir
    root, log = sys.argv[1], sys.argv[2]
    def train(key, data):
        with open(log, "a") as f:
            f.write("trained\\n")
        time.sleep(0.5)
        return {"mean": np.asarray(data.mean())}
    def generate(key, params, data):
        return np.asarray(params["mean"] + jax.random.normal(key, (32,)))
    out = runner.run_generations(RunDir(root), seed=3, real_data=np.arange(32.0), n_generations=3, regime=Regime(),
                                 train=train, generate=generate, evaluate=lambda p, s: {"m": float(p["mean"])},
                                 progress=False)
    print([round(m["m"], 6) for m in out])
    """
)


@pytest.mark.parametrize("script, unit, expected_work", [(TWO_WRITERS, "computed", 1), (TWO_RUNS, "trained", 4)])
def test_two_processes_on_one_key_do_the_work_once_and_agree(tmp_path, script, unit, expected_work):
    log = tmp_path / "work.log"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "results"), str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]  # the same numbers
    assert log.read_text().count(unit) == expected_work  # and the work was done once
    assert any("waiting for another run" in err for _, err in outputs)


# --------------------------------------------------------------------------- the book driver


def small_book(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (root / "_config.yml").write_text("title: t\n")
    (root / "intro.md").write_text("# Intro\n")
    return root


def run_book(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collapse.book", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=120)


def test_the_book_refuses_unknown_pages_and_bad_seeds(tmp_path):
    root = small_book(tmp_path / "book")
    result = run_book(root, "--pages", "chapters/gausian")
    assert result.returncode == 2 and "chapters/gausian: not pages of" in result.stderr and "intro" in result.stderr
    result = run_book(root, "--seed", str(2**32))
    assert result.returncode == 2 and "[0, 2**32)" in result.stderr


def test_a_second_build_in_one_folder_is_refused_with_a_message(tmp_path):
    import fcntl

    root = small_book(tmp_path / "book")
    (root / "_build").mkdir()
    with open(root / "_build" / ".book.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("12345"), held.flush()
        result = run_book(root)
    assert result.returncode == 2 and "another book build (pid 12345) is running" in result.stderr
    assert not (root / "_build" / "stage").exists()  # the running build's stage was left alone


def test_killing_the_parent_of_a_build_stops_its_children():
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from collapse import book
        book._own_children()
        child = subprocess.Popen(["sleep", "120"])
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"p = subprocess.Popen([sys.executable, '-c', {script!r}], stdout=sys.stdout)\n"
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # as `kill -9` of make: the driver is orphaned
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(grandchild):
        time.sleep(0.2)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _chapter_book(root: Path, monkeypatch, chapters: dict[str, str]) -> Path:
    """A book whose chapters are notebook pages with the given bodies; Sphinx is not run."""
    small_book(root)
    toc = "".join(f"  - file: chapters/{name}\n" for name in chapters)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{toc}")
    (root / "chapters").mkdir()
    header = "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n---\n\n"
    for name, body in chapters.items():
        (root / "chapters" / f"{name}.md").write_text(header + body)
    for key in book.page_environment(root):  # build() sets these for its pages; restore them after the test
        monkeypatch.setenv(key, os.environ.get(key, ""))
    monkeypatch.setattr(book.subprocess, "call", lambda command: 0)
    return root


def _two_chapter_book(root: Path, monkeypatch) -> Path:
    return _chapter_book(root, monkeypatch, {"a": "# a\n", "b": "# b\n"})


def test_a_page_with_missing_data_becomes_a_notice_and_the_rest_is_built(tmp_path, monkeypatch):
    root = _chapter_book(tmp_path / "book", monkeypatch, {"lm": "(chapter-lm)=\n# Language models\n\ntext\n",
                                                            "ok": "# Fine\n"})
    ran = []

    class Missing(Exception):
        ename, evalue = "CorpusUnavailable", "WikiText-2 is not in /data. Put wiki.*.raw there."

    def execute(source, target, parameters, cwd):
        ran.append(source.stem)
        if source.stem == "lm":
            raise Missing()
        target.write_text("{}")
        return 0.1

    monkeypatch.setattr(book, "execute_page", execute)
    assert book.build(root, "ci", 0, None) == 0
    notice = (root / "_build" / "stage" / "chapters" / "lm.md").read_text()
    assert notice.startswith("(chapter-lm)=\n# Language models") and "WikiText-2 is not in /data" in notice
    assert ran == ["lm", "ok"]
    assert json.loads((root / "_build" / "stage" / "_execution.json").read_text())["missing_data"] == {
        "chapters/lm": Missing.evalue}
    with pytest.raises(Missing):
        book.build(root, "ci", 0, None, require_data=True)


def test_pages_not_selected_stand_in_by_title_so_the_strict_build_resolves_them(tmp_path, monkeypatch):
    root = _chapter_book(tmp_path / "book", monkeypatch, {"lm": "(chapter-lm)=\n# Language models\n\ntext\n",
                                                            "ok": "# Fine\n\nSee {ref}`chapter-lm`.\n"})
    ran = []

    def execute(source, target, parameters, cwd):
        ran.append(source.stem)
        target.write_text("{}")
        return 0.1

    monkeypatch.setattr(book, "execute_page", execute)
    assert book.build(root, "ci", 0, ["chapters/ok"]) == 0
    assert ran == ["ok"]
    stand_in = (root / "_build" / "stage" / "chapters" / "lm.md").read_text()
    assert stand_in.startswith("(chapter-lm)=\n# Language models") and "executed only chapters/ok" in stand_in
    assert "text" not in stand_in and not (root / "_build" / "stage" / "chapters" / "lm.ipynb").exists()


def test_jobs_run_chapters_at_once_and_record_them_in_book_order(tmp_path, monkeypatch):
    import threading

    root = _two_chapter_book(tmp_path / "book", monkeypatch)
    both = threading.Barrier(2, timeout=20)  # each page waits for the other: only pages run at once pass it
    cwds, preallocate = [], []
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)

    def execute(source, target, parameters, cwd):
        both.wait()
        cwds.append(Path.cwd())
        preallocate.append(os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"))  # what the page's kernel inherits
        time.sleep(0.2 if source.stem == "a" else 0.0)  # b finishes first
        target.write_text("{}")
        return 1.0

    monkeypatch.setattr(book, "execute_page", execute)
    here = Path.cwd()
    assert book.build(root, "ci", 0, None, jobs=2) == 0
    record = json.loads((root / "_build" / "stage" / "_execution.json").read_text())
    assert list(record["pages"]) == ["chapters/a", "chapters/b"] and record["jobs"] == 2
    assert cwds == [root / "_build" / "stage" / "chapters"] * 2  # where papermill starts their kernels
    assert Path.cwd() == here  # and the driver's own folder is given back
    assert preallocate == ["false", "false"]  # two pages can share one GPU


def test_cpu_shares_are_disjoint_and_of_one_size_unless_pages_outnumber_cpus():
    assert book.cpu_shares({0, 1}, 2) == [{0}, {1}]
    shares = book.cpu_shares(range(16), 3)  # one size: a page's thread count does not depend on its slot
    assert [len(s) for s in shares] == [5, 5, 5] and len(set().union(*shares)) == 15
    assert book.cpu_shares({5, 7}, 3) == [{5}, {7}, {5}] and book.cpu_shares({3}, 1) == [{3}]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is set on Linux only")
def test_pages_at_once_run_their_kernels_on_their_own_cpus(tmp_path, monkeypatch):
    # Real kernels: each page writes down the CPUs it may run on, and waits until the other page has started,
    # so both hold a slot at once.
    body = ("# {0}\n\n```{{code-cell}} ipython3\nimport os, pathlib, time\n"
            "pathlib.Path('{0}.cpus').write_text(' '.join(map(str, sorted(os.sched_getaffinity(0)))))\n"
            "deadline = time.time() + 60\n"
            "while not pathlib.Path('{1}.cpus').exists() and time.time() < deadline:\n    time.sleep(0.05)\n```\n")
    root = _chapter_book(tmp_path / "book", monkeypatch, {"a": "", "b": ""})
    header = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
              "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n")
    for page, other in ("ab", "ba"):
        (root / "chapters" / f"{page}.md").write_text(header + body.format(page, other))
    driver = os.sched_getaffinity(0)
    assert book.build(root, "ci", 0, None, jobs=2) == 0
    ran_on = {page: {int(c) for c in (root / "_build" / "stage" / "chapters" / f"{page}.cpus").read_text().split()}
              for page in "ab"}
    assert ran_on == {"a": book.cpu_shares(driver, 2)[0], "b": book.cpu_shares(driver, 2)[1]}
    assert os.sched_getaffinity(0) == driver  # the driver keeps every CPU
    record = json.loads((root / "_build" / "stage" / "_execution.json").read_text())
    assert record["cpus"] == len(driver)

    # One page at a time: the kernel has every CPU the driver has.
    (root / "chapters" / "a.md").write_text(header + body.format("a", "a"))  # waits for nothing
    assert book.build(root, "ci", 0, ["chapters/a"], jobs=1) == 0
    assert {int(c) for c in (root / "_build" / "stage" / "chapters" / "a.cpus").read_text().split()} == driver


def _reads_results_of(root: Path, page: str, after: str) -> None:
    path = root / "chapters" / f"{page}.md"
    path.write_text(path.read_text().replace("\n---\n", f"\nbook:\n  after: [{after}]\n---\n", 1))


def test_a_page_that_reads_another_pages_results_runs_after_it(tmp_path, monkeypatch):
    # b comes first in the book, but reads a's stored results: with two workers it must still wait for a.
    root = _chapter_book(tmp_path / "book", monkeypatch, {"b": "# b\n", "a": "# a\n", "c": "# c\n"})
    _reads_results_of(root, "b", "chapters/a")
    finished, started = set(), []

    def execute(source, target, parameters, cwd):
        started.append(source.stem)
        if source.stem == "b" and "a" not in finished:
            raise RuntimeError("b ran before a had stored its results")
        time.sleep(0.3 if source.stem == "a" else 0.0)
        finished.add(source.stem)
        target.write_text("{}")
        return 0.1

    monkeypatch.setattr(book, "execute_page", execute)
    assert book.build(root, "ci", 0, None, jobs=2) == 0
    # c took the free worker while b waited. a and c start at once, in threads pinned to their own CPUs,
    # so which of them reaches `started` first is the operating system's choice.
    assert sorted(started[:2]) == ["a", "c"] and started[2] == "b"
    record = json.loads((root / "_build" / "stage" / "_execution.json").read_text())
    assert list(record["pages"]) == ["chapters/b", "chapters/a", "chapters/c"]  # recorded in book order

    # A page that another waits for starts first, before pages ahead of it in the book.
    root = _chapter_book(tmp_path / "other", monkeypatch, {"x": "# x\n", "y": "# y\n", "z": "# z\n"})
    _reads_results_of(root, "y", "chapters/z")
    started.clear()
    finished.update("xyz")
    monkeypatch.setattr(book, "execute_page", execute)
    assert book.build(root, "ci", 0, None, jobs=1) == 0
    assert started == ["z", "x", "y"]


def test_prerequisites_that_are_no_page_or_a_cycle_are_refused(tmp_path, monkeypatch):
    root = _two_chapter_book(tmp_path / "book", monkeypatch)
    monkeypatch.setattr(book, "execute_page", lambda source, target, parameters, cwd: 0.1)
    _reads_results_of(root, "a", "chapters/missing")
    with pytest.raises(ValueError, match=r"chapters/a.md: book.after names \['chapters/missing'\]"):
        book.build(root, "ci", 0, None, jobs=2)
    root = _two_chapter_book(tmp_path / "other", monkeypatch)
    monkeypatch.setattr(book, "execute_page", lambda source, target, parameters, cwd: 0.1)
    _reads_results_of(root, "a", "chapters/b")
    _reads_results_of(root, "b", "chapters/a")
    with pytest.raises(ValueError, match="chapters/a, chapters/b wait for pages that cannot run before them"):
        book.build(root, "ci", 0, None, jobs=2)


def test_a_failing_chapter_stops_the_queued_ones(tmp_path, monkeypatch):
    root = _two_chapter_book(tmp_path / "book", monkeypatch)
    ran = []

    def execute(source, target, parameters, cwd):
        ran.append(source.stem)
        raise RuntimeError(f"{source.stem} failed")

    monkeypatch.setattr(book, "execute_page", execute)
    with pytest.raises(RuntimeError, match="a failed"):
        book.build(root, "ci", 0, None, jobs=1)
    assert ran == ["a"]


def test_ctrl_c_stops_the_running_chapters(tmp_path, monkeypatch):
    import threading

    root = _two_chapter_book(tmp_path / "book", monkeypatch)
    stopped = threading.Event()

    def execute(source, target, parameters, cwd):
        time.sleep(0.5)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C while the page runs
        assert stopped.wait(20), "the driver did not stop the running page"
        raise RuntimeError("kernel died")  # what papermill raises when its kernel is killed

    monkeypatch.setattr(book, "execute_page", execute)
    monkeypatch.setattr(book, "_stop_descendants", stopped.set)  # the kernels, in a real build
    # Python's own Ctrl-C handler, as in `make book`: a test worker may have set another one.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            book.build(root, "ci", 0, None, jobs=1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.is_set()


def test_jobs_below_one_are_refused(tmp_path):
    result = run_book(small_book(tmp_path / "book"), "--jobs", "0")
    assert result.returncode == 2 and "--jobs 0: at least one page must run at a time" in result.stderr


def test_records_are_written_atomically(tmp_path):
    target = tmp_path / "r.json"
    records.write(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and not list(tmp_path.glob(".*.tmp"))


def test_code_digest_keys_results(monkeypatch, tmp_path):
    key = store_module.config_key("exp", "1", {"a": 1})
    monkeypatch.setattr(store_module, "code_digest", lambda experiment=None: "other-code")
    assert store_module.config_key("exp", "1", {"a": 1}) != key
    seen = []
    monkeypatch.setattr(store_module, "code_digest", lambda experiment=None: seen.append(experiment) or "code")
    store_module.config_key("lm-analysis", "1", {"a": 1})
    assert seen == ["lm-analysis"]  # the key asks for that experiment's code
    monkeypatch.undo()
    package = Path(store_module.__file__).parent
    assert store_module.code_digest("lm-analysis") == store_module.source_digest(package, "lm_experiment")
    assert store_module.code_digest("not-an-experiment") == store_module.source_digest(package)  # every module


def test_an_experiments_key_hashes_the_modules_it_imports(tmp_path):
    package = Path(store_module.__file__).parent
    copy = tmp_path / "collapse"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {m: store_module.source_digest(copy, m) for m in ("discrete", "lm_experiment", "gaussian", "real_fraction")}
    everything = store_module.source_digest(copy)

    def edit(name: str) -> dict:
        with open(copy / f"{name}.py", "a") as f:
            f.write("\n# an edit\n")
        return {m: store_module.source_digest(copy, m) for m in before}

    after = edit("lm_experiment")  # the LM chapter's code: no other chapter's results are re-keyed
    assert after["lm_experiment"] != before["lm_experiment"] and store_module.source_digest(copy) != everything
    assert [after[m] == before[m] for m in ("discrete", "gaussian", "real_fraction")] == [True] * 3
    after = edit("sampling")  # imported by discrete, and by real_fraction through discrete
    assert [after[m] != before[m] for m in ("discrete", "real_fraction")] == [True] * 2 and after["gaussian"] == before["gaussian"]
    after = edit("runner")  # every experiment runs on it
    assert all(after[m] != before[m] for m in before)
    assert "chapter" in store_module.imported_modules(copy, "gaussian")
    unchanged = store_module.source_digest(copy, "gaussian")
    edit("chapter")  # imported, but presentation: no stored number depends on it
    assert store_module.source_digest(copy, "gaussian") == unchanged


def test_every_experiment_the_library_stores_has_its_module():
    import re

    package = Path(store_module.__file__).parent
    names = set()
    for path in package.glob("*.py"):
        source = path.read_text()
        names |= set(re.findall(r'\.(?:cached|run_dir)\(f?"([^"{]+)', source))
        names |= set(re.findall(r'generation_zero_dir\(store, "([^"]+)"', source))
    assert {"gaussian", "discrete", "lm", "lm-pretrain", "vae", "classifier", "mixtures-"} <= names  # the scan sees them
    for name in names:
        module = store_module.experiment_module(name + ("x" if name.endswith("-") else ""))
        assert module is not None and (package / f"{module}.py").is_file(), name
        assert module in store_module.imported_modules(package, module)
