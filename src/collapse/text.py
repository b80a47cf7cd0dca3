"""Chapter 4's corpora and tokenizers: WikiText-2 and the Brown Corpus, cut into 64-token blocks.

**WikiText-2** (Merity et al. 2016), the paper's corpus, in either release:

* the raw release (``wikitext-2-raw-v1``, the paper's), as files ``wiki.{train,valid,test}.raw``;
* the tokenized release (rare words replaced by ``<unk>``, punctuation split), as
  ``wiki.{split}.tokens`` or ``{split}.txt`` (the names pytorch/examples uses).

Files are looked for under ``COLLAPSE_DATA_DIR`` (folders ``wikitext-2-raw``,
``wikitext-2-raw-v1``, ``wikitext-2``, ``wikitext-2-v1``), the raw release first. If none
is there, the raw release is downloaded from the Hugging Face Hub (``Salesforce/wikitext``),
its bytes checked against the SHA-256 the Hub publishes, and saved as ``wiki.*.raw``.

**The Brown Corpus** (Francis & Kučera 1964/1979) in NLTK's layout (files ``ca01``…``cr09``
of ``word/TAG`` tokens, ``cats.txt``), from ``COLLAPSE_DATA_DIR/brown`` or an
``nltk_data/corpora/brown``. Tags are dropped; a sentence is a line. Split by file,
stratified by genre: within each genre, files in name order, the 9th of every 10 goes to
validation, the 10th to test, the rest to training (about 80/10/10 in every genre).
"""

from __future__ import annotations

import hashlib

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .paths import data_dir
from .store import atomic_write, file_digest

SPLITS = ("train", "valid", "test")
CORPORA = ("wikitext-2", "brown")

# SHA-256 of the tokenized release's files (byte-identical under either name).
WIKITEXT_TOKENS_SHA256 = {
    "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
_WIKITEXT_FOLDERS = ("wikitext-2-raw", "wikitext-2-raw-v1", "wikitext-2", "wikitext-2-v1")
_HUB_REPO, _HUB_FOLDER = "Salesforce/wikitext", "wikitext-2-raw-v1"
_HUB_SPLIT = {"train": "train", "valid": "validation", "test": "test"}


class CorpusUnavailable(FileNotFoundError):
    """The corpus is neither on disk nor downloadable; the message says how to get it."""


class Corpus(NamedTuple):
    name: str  # wikitext-2 or brown
    release: str  # which files: "raw", "tokenized" (WikiText-2) or "nltk" (Brown)
    train: list[str]  # non-blank lines of text
    valid: list[str]
    test: list[str]
    verified: bool  # the files match published checksums
    source: str  # where they were read from


class CorpusDamaged(ValueError):
    """A corpus file is empty or not text; the message names it."""


def _lines(path: Path) -> list[str]:
    """The non-blank lines of a split; a clear error, naming the file, when it is not UTF-8 text or has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorpusDamaged(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                            "replace it with the published file") from None
    lines = [line.rstrip("\n") for line in text.splitlines() if line.strip()]
    if not lines:
        raise CorpusDamaged(f"{path} holds no text; replace it with the published file")
    return lines


def _find_wikitext(root: Path) -> tuple[str, dict[str, Path]] | None:
    for folder in (root / name for name in _WIKITEXT_FOLDERS):
        for release, pattern in (("raw", "wiki.{}.raw"), ("tokenized", "wiki.{}.tokens"), ("tokenized", "{}.txt")):
            paths = {split: folder / pattern.format(split) for split in SPLITS}
            if all(p.is_file() for p in paths.values()):
                return release, paths
    return None


def download_wikitext_raw(root: Path) -> dict[str, Path]:
    """The raw release from the Hugging Face Hub, SHA-256 checked, saved as ``root/wikitext-2-raw/wiki.*.raw``."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
        import pyarrow.parquet as pq
    except ImportError as error:
        raise CorpusUnavailable(f"downloading WikiText-2 needs huggingface_hub and pyarrow ({error})") from error
    files = {split: f"{_HUB_FOLDER}/{_HUB_SPLIT[split]}-00000-of-00001.parquet" for split in SPLITS}
    infos = {i.path: i for i in HfApi().get_paths_info(_HUB_REPO, list(files.values()), repo_type="dataset")}
    out = {}
    for split, name in files.items():
        local = Path(hf_hub_download(_HUB_REPO, name, repo_type="dataset"))
        expected = getattr(getattr(infos.get(name), "lfs", None), "sha256", None)
        if expected is None or file_digest(local) != expected:
            raise CorpusUnavailable(f"{name} from the Hub does not match its published SHA-256; not using it")
        text = "\n".join(pq.read_table(local).column("text").to_pylist())
        out[split] = root / "wikitext-2-raw" / f"wiki.{split}.raw"
        atomic_write(out[split], lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        # A record of what was checked, so later runs know these files came from the Hub intact.
        digest = file_digest(out[split])
        atomic_write(_checked(out[split]), lambda tmp, d=digest: tmp.write_text(f"{d}  hub:{_HUB_REPO}/{name} {expected}\n"))
    return out


def _checked(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _raw_verified(path: Path) -> bool:
    record = _checked(path)
    return record.is_file() and record.read_text().split()[0] == file_digest(path)


def _how_to_get_wikitext(root: Path) -> str:
    return (f"Put wiki.{{train,valid,test}}.raw (or .tokens, or train/valid/test.txt) in {root}/wikitext-2-raw or "
            f"{root}/wikitext-2, or set COLLAPSE_DATA_DIR to a folder that has them, or run where the Hugging Face "
            "Hub can be reached.")


def load_wikitext(root: Path | None = None, *, download: bool = True) -> Corpus:
    """WikiText-2 from ``root`` (default ``COLLAPSE_DATA_DIR``), else the Hub (see the module text)."""
    root = Path(root) if root is not None else data_dir()
    found = _find_wikitext(root)
    if found is None and download:
        try:
            found = ("raw", download_wikitext_raw(root))
        except CorpusUnavailable:
            raise
        except Exception as error:  # offline, Hub down: say how to get the files
            raise CorpusUnavailable(
                f"WikiText-2 is not in {root} and could not be downloaded ({type(error).__name__}: {error}). "
                + _how_to_get_wikitext(root)
            ) from error
    if found is None:
        raise CorpusUnavailable(f"WikiText-2 is not in {root}. " + _how_to_get_wikitext(root))
    release, paths = found
    if release == "raw":  # verified when it was downloaded and checked here; a copy put there by hand is not
        verified = all(_raw_verified(paths[s]) for s in SPLITS)
    else:
        verified = all(file_digest(paths[s]) == WIKITEXT_TOKENS_SHA256[s] for s in SPLITS)
    return Corpus("wikitext-2", release, *(_lines(paths[s]) for s in SPLITS), verified, str(paths["train"].parent))


def _brown_folders(root: Path) -> list[Path]:
    folders = [root / "brown"]
    for base in [*os.environ.get("NLTK_DATA", "").split(os.pathsep), str(Path.home() / "nltk_data")]:
        if base:
            folders.append(Path(base) / "corpora" / "brown")
    return folders


def brown_sentences(path: Path) -> list[str]:
    """One line per sentence, ``word/TAG`` tokens reduced to their words."""
    sentences = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = [token.rsplit("/", 1)[0] for token in line.split()]
        if words:
            sentences.append(" ".join(words))
    return sentences


def brown_split(categories: dict[str, str]) -> dict[str, list[str]]:
    """Files per split: by genre, in name order, positions 8 and 9 of every 10 to valid and test."""
    split = {s: [] for s in SPLITS}
    for genre in sorted(set(categories.values())):
        for i, name in enumerate(sorted(f for f, g in categories.items() if g == genre)):
            split["valid" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(name)
    return split


def load_brown(root: Path | None = None) -> Corpus:
    root = Path(root) if root is not None else data_dir()
    for folder in _brown_folders(root):
        if (folder / "cats.txt").is_file():
            break
    else:
        raise CorpusUnavailable(
            f"The Brown Corpus is not in {root}/brown or an nltk_data/corpora/brown. Get it with "
            "`python -m nltk.downloader brown` (then unzip corpora/brown.zip) or copy NLTK's brown folder there."
        )
    categories = {}
    for line in (folder / "cats.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and (folder / parts[0]).is_file():
            categories[parts[0]] = parts[1]
    if not categories:
        raise CorpusUnavailable(f"{folder}/cats.txt names no file of the corpus")
    files = brown_split(categories)
    lines = {s: [sentence for name in files[s] for sentence in brown_sentences(folder / name)] for s in SPLITS}
    return Corpus("brown", "nltk", lines["train"], lines["valid"], lines["test"], False, str(folder))


def load_corpus(name: str, root: Path | None = None) -> Corpus:
    if name == "wikitext-2":
        return load_wikitext(root)
    if name == "brown":
        return load_brown(root)
    raise ValueError(f"corpus={name!r} is not known; choose one of {CORPORA}")


def load_or_fallback(name: str, root: Path | None = None) -> tuple[Corpus, str | None]:
    """The corpus asked for, else the other one and a notice for the reader saying why."""
    try:
        return load_corpus(name, root), None
    except CorpusUnavailable as error:
        other = CORPORA[1 - CORPORA.index(name)]
        corpus = load_corpus(other, root)  # raises, with its own how-to, if neither can be had
        return corpus, f"{name} could not be had, so this page ran on {other} instead. ({error})"


# --------------------------------------------------------------------------- tokenizers and blocks

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in OPT's vocabulary: pad 1, bos = eos 2
UNK_ID = SPECIAL_TOKENS.index("<unk>")
# Version of the trained BPE (in its cache file's name). 2: ``<unk>`` takes the space before it.
BPE_VERSION = 2


def text_digest(lines: list[str]) -> str:
    """A short hash of a split's text: keys what was trained on it (the BPE cache)."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def train_bpe(lines: list[str], vocab_size: int, path: Path):
    """A byte-level BPE tokenizer trained on ``lines`` (saved to ``path``; loaded if already there).
    ``path`` must name what it was trained on (see :func:`text_digest`): a cached tokenizer is
    never reused for other text."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    path = Path(path)
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from tokenizers import AddedToken

    bpe = ByteLevelBPETokenizer()
    # " <unk>" is one token, as " word" is: a special token alone would leave its space as a token of
    # its own ("Ġ"), always followed by <unk>, and a two-token unit whose second token is certain is
    # cheap for beam search. Generation 0 at the cpu profile wrote " <unk> <unk> …" from its second
    # token on (median 4 tokens before a repeated 3-gram, against 64 in real text) until this change.
    unk = AddedToken("<unk>", lstrip=True, special=True)
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=[*SPECIAL_TOKENS[:3], unk],
                            show_progress=False)
    atomic_write(path, lambda tmp: bpe.save(str(tmp)))
    return Tokenizer.from_file(str(path))


def gpt2_tokenizer(folder: Path):
    """OPT's GPT-2 byte-level BPE from a model folder's ``vocab.json`` and ``merges.txt``."""
    from tokenizers.implementations import ByteLevelBPETokenizer

    return ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))._tokenizer


def to_blocks(tokenizer, lines: list[str], *, bos_id: int, block_size: int = 64) -> np.ndarray:
    """Every line tokenized with a leading BOS (as OPT's tokenizer adds it), all concatenated and cut
    into ``block_size``-token blocks, the remainder dropped (the authors' and ``run_clm``'s recipe)."""
    ids = [bos_id]
    for encoding in tokenizer.encode_batch(lines, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(bos_id)
    ids = np.asarray(ids[:-1], np.int32)
    n = len(ids) // block_size
    return ids[: n * block_size].reshape(n, block_size)


def decode(tokenizer, ids, *, skip: tuple[int, ...] = (0, 1, 2)) -> str:
    """The text of token ids, without BOS, padding and EOS. ``<unk>`` (id 3) is kept: the tokenized
    WikiText-2 release writes its rare words as ``<unk>``, so a model trained on it writes them too."""
    kept = [int(i) for i in ids if int(i) not in skip]
    # The trained BPE's <unk> holds the space before it (train_bpe), which decoding would drop.
    pieces, start = [], 0
    for at in [k for k, i in enumerate(kept) if i == UNK_ID] + [len(kept)]:
        pieces.append(tokenizer.decode(kept[start:at], skip_special_tokens=False))
        start = at + 1
    return " <unk>".join(pieces)
