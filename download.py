"""Where the data lives, and how to get it: the corpus train.py uses by default, the evaluation datasets
(SST-2, UD English-EWT, the wiki validation text), and their downloads (checksums, .part files, offline help).

    $MINIBERT_DATA_DIR, else ../shared/data, else <repo>/data   --(resolve_corpus, dataset_path)-->  a file
    URL --(download: progress bar, checksum, .part then rename, unzip)--> <data_dir>/<folder>/
data.py reads what these functions find; `python data.py download NAME` and `python data.py resolve` call them.

Usage:
    python download.py                    # the corpus train.py would use, and which datasets are present

Expect: `corpus ../shared/data/wiki_en_2015/wiki.train.txt.gz (default), validation .../wiki.valid.txt`, then
one line per dataset file (`sst2_dev       ../shared/data/sst2/dev.tsv`, or `missing: python data.py download sst2`).
"""
import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from config import ArgumentParser, UserError, cli, existing_dir, existing_file

REPO = Path(__file__).resolve().parent


class DownloadError(UserError, RuntimeError):
    """A download that failed (offline, bad checksum); the message is one line."""



# ---- locations ----

def default_data_dir():
    """$MINIBERT_DATA_DIR, else ../shared/data (next to the repo) if it exists, else <repo>/data."""
    env = os.environ.get("MINIBERT_DATA_DIR")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else REPO / "data"


# default corpora in order of preference, relative to a data dir: (train, validation)
DEFAULT_CORPORA = [
    ("wiki_en_2015/wiki.train.txt.gz", "wiki_en_2015/wiki.valid.txt"),
    ("wikitext-103-raw/wiki.train.raw", "wikitext-103-raw/wiki.valid.raw"),
    ("wikitext-2-raw/wiki.train.raw", "wikitext-2-raw/wiki.valid.raw"),
]


def find_validation_file(corpus):
    """The validation file next to a training corpus: 'train' -> 'valid' in the name, with or without
    '.small' and '.gz' (wiki.train.txt.gz -> wiki.valid.txt). None if there is none."""
    corpus = Path(corpus)
    name = corpus.name
    if "train" not in name:
        return None
    base = name.replace("train", "valid").replace(".small", "")
    for cand in (base, base[:-3] if base.endswith(".gz") else base + ".gz"):
        p = corpus.with_name(cand)
        if p.is_file() and p.resolve() != corpus.resolve():
            return p
    return None


def resolve_corpus(corpus=None, data_dir=None):
    """(train_path, valid_path or None, one-line description) for train.py.
    corpus given: that file, and its validation file if one sits next to it. Otherwise the first of
    DEFAULT_CORPORA found in data_dir (default_data_dir()) or <repo>/data (where `download` puts files)."""
    if corpus is not None:
        train = Path(corpus)
        if not train.is_file():
            raise FileNotFoundError(f"corpus {train} does not exist.")
        valid = find_validation_file(train)
        return train, valid, f"corpus {train} (from --corpus), validation {valid or 'none found'}"
    dirs = [Path(data_dir)] if data_dir is not None else [default_data_dir(), REPO / "data"]
    for d in dirs:
        for tr, va in DEFAULT_CORPORA:
            if (d / tr).is_file():
                valid = d / va if (d / va).is_file() else None
                return d / tr, valid, f"corpus {d / tr} (default), validation {valid or 'none found'}"
    raise FileNotFoundError(
        f"no default corpus in {', '.join(str(d) for d in dirs)}; run `python data.py download wikitext-103` "
        f"(needs internet) or pass --corpus FILE (plain text, one paragraph per line).")



DATASET_FILES = {  # name -> (candidate paths inside a data dir, the command that fetches it)
    "ud_ewt_train": (["ud_english_ewt/en_ewt-ud-train.conllu"], "python data.py download ud-ewt"),
    "ud_ewt_dev": (["ud_english_ewt/en_ewt-ud-dev.conllu"], "python data.py download ud-ewt"),
    "ud_ewt_test": (["ud_english_ewt/en_ewt-ud-test.conllu"], "python data.py download ud-ewt"),
    "sst2_train": (["sst2/train.tsv"], "python data.py download sst2"),
    "sst2_dev": (["sst2/dev.tsv"], "python data.py download sst2"),
    "wiki_valid": (["wiki_en_2015/wiki.valid.txt", "wikitext-103-raw/wiki.valid.raw", "wikitext-2-raw/wiki.valid.raw"],
                   "python data.py download wikitext-103"),
}


def dataset_path(name):
    """First existing file for dataset `name` (a key of DATASET_FILES) in default_data_dir() or <repo>/data;
    else a UserError that names the folders and the download command."""
    dirs = list(dict.fromkeys([default_data_dir(), REPO / "data"]))
    cands, fix = DATASET_FILES[name]
    for d in dirs:
        for c in cands:
            if (d / c).is_file():
                return d / c
    raise UserError(f"dataset file {cands[0]} not found in {' or '.join(map(str, dirs))}; run `{fix}` "
                    f"(or set MINIBERT_DATA_DIR to the folder that holds it).")


# ---- downloads ----

# name -> (folder inside data_dir, [(url, file name, "sha256:..."/"md5:..." or None)], zip members to extract)
# Checksums: UD from the files themselves (r2.16, see ../shared/data/README.md); the zips' md5 as published
# by torchtext (SST-2) and in common WikiText download scripts. UD train has no published hash we trust.
DATASETS = {
    "wikitext-103": ("wikitext-103-raw",
                     [("https://wikitext.smerity.com/wikitext-103-raw-v1.zip", "wikitext-103-raw-v1.zip",
                       "md5:0ca3512bd7a238be4a63ce7b434f8935")],
                     ["wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"]),
    "wikitext-2": ("wikitext-2-raw",
                   [("https://wikitext.smerity.com/wikitext-2-raw-v1.zip", "wikitext-2-raw-v1.zip",
                     "md5:f407a2d53283fc4a49bcff21bc5f3770")],
                   ["wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"]),
    "sst2": ("sst2",
             [("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", "SST-2.zip",
               "md5:9f81648d4199384278b86e315dac217c")],
             ["train.tsv", "dev.tsv", "test.tsv"]),
    "ud-ewt": ("ud_english_ewt",
               [("https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
                 "en_ewt-ud-train.conllu", "en_ewt-ud-train.conllu", None),
                ("https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
                 "en_ewt-ud-dev.conllu", "en_ewt-ud-dev.conllu",
                 "sha256:531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
                ("https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
                 "en_ewt-ud-test.conllu", "en_ewt-ud-test.conllu",
                 "sha256:e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd")],
               []),
}


def _fetch(url, dest, checksum, folder, timeout=30):
    """Stream url to dest.part with a progress bar, check the checksum, then rename to dest."""
    from tqdm import tqdm
    algo, _, want = (checksum or "sha256:").partition(":")
    h = hashlib.new(algo)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"could not download {url} ({reason}). If you are offline, put the file in {folder}/ yourself, "
            f"or skip downloading and pass --corpus FILE (any plain-text corpus).") from None
    if want and h.hexdigest() != want:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {algo} is {h.hexdigest()}, expected {want}; the download is corrupt "
                            f"or the file changed upstream (nothing was kept).")
    os.replace(part, dest)


def download(name, data_dir="data", base_url=None):
    """Download dataset `name` (a key of DATASETS) into <data_dir>/<folder>/ and unzip what needs it.
    Files already present are skipped. base_url replaces everything before a file's name in its URL
    (for mirrors and for the tests' local server). Returns the folder."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    sub, files, members = DATASETS[name]
    folder = Path(data_dir) / sub
    folder.mkdir(parents=True, exist_ok=True)
    for url, fname, checksum in files:
        if base_url:
            url = base_url.rstrip("/") + "/" + url.rsplit("/", 1)[1]
        dest = folder / fname
        wanted = [folder / m for m in members] if fname.endswith(".zip") else [dest]
        if all(p.is_file() for p in wanted):
            print(f"{name}: {', '.join(p.name for p in wanted)} already in {folder}, skipped")
            continue
        if not dest.is_file():
            print(f"{name}: downloading {url}")
            try:
                _fetch(url, dest, checksum, folder)
            except DownloadError:
                if not any(folder.iterdir()):
                    folder.rmdir()                     # leave no empty folder behind
                raise
        if fname.endswith(".zip"):
            with zipfile.ZipFile(dest) as z:
                for info in z.infolist():
                    base = info.filename.rsplit("/", 1)[-1]
                    if base in members and not (folder / base).is_file():
                        tmp = folder / (base + ".part")
                        tmp.write_bytes(z.read(info))
                        os.replace(tmp, folder / base)
            missing = [m for m in members if not (folder / m).is_file()]
            if missing:
                raise DownloadError(f"{dest} does not contain {missing}; delete it and download again.")
    print(f"{name}: ready in {folder}")
    return folder


@cli
def main(argv=None):
    p = ArgumentParser(description="Show which corpus train.py would use and which datasets are present.")
    p.add_argument("--corpus", default=None, type=existing_file, help="a training text (default: the resolver's choice)")
    p.add_argument("--data-dir", default=None, type=existing_dir, help="where to look (default: default_data_dir())")
    args = p.parse_args(argv)
    try:
        print(resolve_corpus(args.corpus, args.data_dir)[2])
    except FileNotFoundError as e:
        print(f"no corpus: {e}")
    for name, (cands, fix) in DATASET_FILES.items():
        try:
            print(f"{name:14s} {dataset_path(name)}")
        except UserError:
            print(f"{name:14s} missing: {fix}")


if __name__ == "__main__":
    main()
