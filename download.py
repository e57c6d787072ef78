"""Where the data lives, and how to get it: the corpus train.py uses by default, the evaluation datasets
(SST-2, UD English-EWT, BLiMP, the wiki validation text), and their downloads (checksums, .part files, offline help).

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
    "blimp": (["blimp/adjunct_island.jsonl"], "python data.py download blimp"),   # the first of 67: its folder
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

# BLiMP (Warstadt et al. 2020): one JSON-lines file of 1,000 minimal pairs per paradigm, 67 paradigms, 29 MB,
# pinned to this commit of github.com/alexwarstadt/blimp; the sha256 of each file was computed from that commit
# (`sha256sum -c` reads this table once '.jsonl' is added to each name).
BLIMP_COMMIT = "3e56b06fcabca9b30822fc66435fca6b1aa40bb1"
BLIMP_SHA256 = dict(line.split()[::-1] for line in """
ecc71c452516de03deeb9262b4203e45220dc52727327a08eef07c79c01eac8b  adjunct_island
fd7d6e47196fa1310a251d3aa88ae9a62bb64d3cec35fc02617229d5799767e1  anaphor_gender_agreement
05c16b8bfe4feb5b3552dc2c53d1742ce0c91d9a1c896684335bdddd4373cc9b  anaphor_number_agreement
245e91961cf597150244c3945c6d0033e691b27ba6cf298c62920d355426e70c  animate_subject_passive
a7bffeda200f648c33dd215d91d8f5756fcd1e3f410bab467f1ed9235f215850  animate_subject_trans
2e1006cc24094a3049586888105b22181d77e09e11dea65a326b49977bb366f1  causative
1c92472731dd9a21eb222d64bee756042a3763c3797b5283d5b84ab8e3cbb74c  complex_NP_island
47e0e04efeb320449a8eb2ac722b895041a8609580fec2880dbc719f50fba194  coordinate_structure_constraint_complex_left_branch
d01c27a7a893f3ec071a7913efa504d297671d86a987f26ddb565de914db2fd7  coordinate_structure_constraint_object_extraction
f48065fd760d0fd1a895012860d38bdf3c2ac115cd221e521684cc430c0f1855  determiner_noun_agreement_1
8ae7eff7c7bd384ff5ef3113984834f4d78b34559203aa9d5cb14ea8394291a9  determiner_noun_agreement_2
4f350e88db9e29e53ae96f1f0b5991c7809fd4fd403190907330b721e1e6e264  determiner_noun_agreement_irregular_1
d688af0ccd0614d24a936e0929276784f37554f3ad3e247c3bade8dcaa9099df  determiner_noun_agreement_irregular_2
8d2828d7dfbfc3f7191024514060fedb033ea2e232304f63448c33051a85d2b3  determiner_noun_agreement_with_adj_2
1f4c6e42a48f4220afec629679641479feac3883cd7fa346d9e9e129cd7e8f55  determiner_noun_agreement_with_adj_irregular_1
aa3f297a7ce0c03b5fc00458834f89e54eb855973be098497f766a390b4bc669  determiner_noun_agreement_with_adj_irregular_2
2c3de4e7b7aea499fb7cf1b23b9c3b63662289880f991b9ffabe5ceb94cf7430  determiner_noun_agreement_with_adjective_1
37c1553f4c6594b162256edce0f6b40bad1898b311c8aaa69605b526b6494a34  distractor_agreement_relational_noun
854728b6db8f23f12583f7332b654835351eaedb50783e6f2a3bf6c101b8c422  distractor_agreement_relative_clause
e262339a262a57a8f56dc41941ee1dc32c62eb97054b27d33cd8c356a6e62064  drop_argument
3cc0bcf91631a4476ce573ea9dbf9627d52efbe071c26019e2c2448b68769d09  ellipsis_n_bar_1
3dfc2b378ea4867186917ec9cce5ce927e4d3bb6addf018bc31b870dd2aa8474  ellipsis_n_bar_2
3781bfd54ec1208fc634f4d365189f948ec246526a7345b5148dd3ab6023ff4f  existential_there_object_raising
4bd0f6dee3c1824b51b0dafb9fce2b00933e8053fcd4a7b99b6202e1b8b49f9e  existential_there_quantifiers_1
b1a80f4ebebae90a90927259f95b680059020e6bb4e38e64a41eb8e53bc3f617  existential_there_quantifiers_2
7c6f5b13225f73a777755c1948beef5cfa31d135ae8a0e7ba8853d256fbece23  existential_there_subject_raising
15ed3a52c978ecfe5eda7f64b0304b5bd133439cccb2c97fde20834f39874c93  expletive_it_object_raising
d9389a7130ca84c6f920c9d892cc60c1b20f378d28e7041b1c53ae589fc84f1d  inchoative
9af9f3f30c891cd21623922b62fd97685552b4ae94a6cfd5617a5f0cb0f731b3  intransitive
5e490be0723989499391ac14d11b3bb6677f4b470514486b2db3fbfe76d56b3c  irregular_past_participle_adjectives
75a990117c1a403d3b479e0fbe170f6919c2408def738ffcea8c62b49b70a555  irregular_past_participle_verbs
0066174143671bffa54232d89254d14221afab666273edfefdfb625fbb75e226  irregular_plural_subject_verb_agreement_1
9b22db814e7b7251f4abafe8beb9616f2f46eaa58f7cdb701cbc737cc8f1a124  irregular_plural_subject_verb_agreement_2
7dadbe3c5a5ceadb78b9408807ac88230ddd748abfe8de8121f064e2bce94ad8  left_branch_island_echo_question
e2a64b8a1b7b8d94f931018cf9325836e9c79953a01379233da255eac5e8cd71  left_branch_island_simple_question
657c9d6e6d50a9cd651881fcbc57cef2fd998611f6f53158ed05e48822fcd2b5  matrix_question_npi_licensor_present
9aa85dc5c2b0d85ea51f21db50d6d327ab5b45d1669e386d54b1360d3ac954af  npi_present_1
52fcfa230a40ae27998273cc08ecd062aad17025c92389df3404a85ed519909b  npi_present_2
475c6595187a32e4dcfb868d3db90394e89669a94a9312ebd60f88dad1665f1c  only_npi_licensor_present
ca1f0671643e37936515f02125036bc2904ab9b35c4689b0e7a3ea3914e571f6  only_npi_scope
e9374307bca5c24e9df18597a0859f7fb5ca4cfe5f136ec894d1ba69f4c90116  passive_1
4d49e438185bed4122a252dd9ee69bc8eccb2fe6c1b09ccc78198fd925fed8c5  passive_2
74c8111666542c797dee1c38c9e432b0b65751dfa0faa51874a990f2cbfc76fc  principle_A_c_command
7efb5246fe315dc2cf56b80739783cffcddee9e52650716cf5aa0f6987f7644d  principle_A_case_1
5de6db4c21a8433bc1f1030e81d5ee151efce02078460f7de7ca5e9566afd914  principle_A_case_2
2276dc35a51396c7d11a401e378e0f4b31cd10d7916c73e9a361703cb96eddc5  principle_A_domain_1
9d14e5ae911fb8ddf571484ef2d6a6e6a053765c1c6d34253aec2c11f7d7306a  principle_A_domain_2
a0d66b9d8541ab1df08f629161c6c4e8bca3aa2693eaa342edd2097e6b579bdd  principle_A_domain_3
65dc403c4d6e9a609f2c4cc2ec6c8baa05cf6fce89b920a816b0d9932204b2a3  principle_A_reconstruction
1a18d94062c8e792c0a200a3b00dff0e051a92bb084c05e9b5e5c73bee32a620  regular_plural_subject_verb_agreement_1
e5b4668811e63b00ac4c9569cb9553281a39c21df43256905ad78e59ae24942c  regular_plural_subject_verb_agreement_2
c43405aca13ba4aa6ad87f9b051e4ba5fc458f24e683cfe0af23e6e09ec7268b  sentential_negation_npi_licensor_present
6c341ccc39c94bea45c0412986751bf2f6eca48626728e30e23d2b6a22c8b949  sentential_negation_npi_scope
a286b67cc5912aafeb06750b38923abf3338786ffa4309e0a6a07b1dbe2444bd  sentential_subject_island
bebc5c5ff28cf226cc35293c60cde1fcf7565a7b58cb219d01ac8908b952a497  superlative_quantifiers_1
4bef08f3e6bd3fbb46021dda34000f3c00222c5576babe4882a8541f6820a106  superlative_quantifiers_2
8eb3a1ecbdbd969c5b77e2f85b12a39d33723bdc58d673e5067bb456da91d0e5  tough_vs_raising_1
a6db2f24a8aee0c90a9be63e6bb6787fe04e990c518761115f69f27c7438b5ae  tough_vs_raising_2
48de2025571897c7590659c793d2d1ce85c247808d4199bad60f66cf2eb179ef  transitive
77824ca8c0008fb7a204e785ca2dcee1b2803f666bb545bd95cb8a51e04f1a4c  wh_island
685c74eb8c199f30a24bba1bfabf9d9dff7962a64430e62b9b5f61d5369241ff  wh_questions_object_gap
3c33e4efc7182824211ff3288694cf010f4ce84f85c8df67410d784139c722b3  wh_questions_subject_gap
985bae202dbc5566b9b5c51bd77dd9d1dbcd87e0f38e008c34a11d7aa07db788  wh_questions_subject_gap_long_distance
6a25d0d1499e9f522696a62ce9dba8c49f58c5446fddc6d852bf562d1016163c  wh_vs_that_no_gap
968faf59602a67f9cfd7c2e91a314a3f7342fd5daf41c21cadd25288fc85fdcf  wh_vs_that_no_gap_long_distance
56f1ca988a8ca368234f12359792c414fdfec2891154e3f8ce6404da1d3f3212  wh_vs_that_with_gap
3cb19100d6384264e512801e96c20e172a3c0c7778276b80ed60c65e97b86ab5  wh_vs_that_with_gap_long_distance
""".strip().splitlines())                                          # paradigm -> sha256 of data/<paradigm>.jsonl

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
    "blimp": ("blimp",
              [(f"https://raw.githubusercontent.com/alexwarstadt/blimp/{BLIMP_COMMIT}/data/{name}.jsonl",
                f"{name}.jsonl", f"sha256:{sha}") for name, sha in BLIMP_SHA256.items()],
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
