"""data.py: readers (errors carry file:line), the corpus resolver, prepare (exact ids, cache, rebuild),
PackedBatches (no padding, determinism, exact resume), held-out batches, padding/bucketing, and downloads
against a local http.server (127.0.0.1 only)."""
import gzip
import hashlib
import http.server
import io
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import data
import download

FIX = Path(__file__).resolve().parent / "fixtures"


# ---- readers ----

def test_read_text_documents_txt_and_gz_agree(tmp_path):
    docs = list(data.read_text_documents(FIX / "data_corpus.txt"))
    assert [d[0] for d in docs] == ["Anarchism", "Albedo", "Aristotle"]       # two blank lines = one break
    assert len(docs[1]) == 4
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress((FIX / "data_corpus.txt").read_bytes()))
    assert list(data.read_text_documents(gz)) == docs


def test_bad_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine\nalso fine\nbroken \xff here\n")
    with pytest.raises(data.DataFormatError, match=r"bad\.txt:3:"):
        list(data.read_text_documents(p))


def test_read_wikitext_articles_and_undo():
    docs = list(data.read_wikitext(FIX / "data_wikitext.raw"))
    assert [d[0] for d in docs] == ["Robert Boulter", "Du Fu"]                  # '= = Career = =' is no article
    text = " ".join(docs[0])
    assert "guest-starring" in text and "1,200" in text and "3.5" in text and "@" not in text
    assert "Career" in docs[0] and "2000 – 2005" in docs[0]
    with pytest.raises(data.DataFormatError, match=r"data_wikitext_bad\.raw:3: malformed heading"):
        list(data.read_wikitext(FIX / "data_wikitext_bad.raw"))


def test_read_sst2():
    s, y = data.read_sst2(FIX / "data_sst2.tsv")
    assert s[0] == "hide new secretions from the parental units" and y.tolist() == [0, 0, 1]
    assert y.dtype == np.int64
    with pytest.raises(data.DataFormatError, match=r"data_sst2_bad\.tsv:3:"):
        data.read_sst2(FIX / "data_sst2_bad.tsv")


def test_read_conllu_skips_ranges_and_empty_nodes():
    sents = data.read_conllu(FIX / "data_ewt.conllu")
    assert sents[0]["words"] == ["I", "do", "n't", "know", "."]
    assert sents[0]["upos"] == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert sents[0]["xpos"] == ["PRP", "VBP", "RB", "VB", "."]
    assert sents[0]["text"] == "I don't know."
    assert sents[1]["text"] == "Hello !" and len(sents) == 2
    with pytest.raises(data.DataFormatError, match=r"data_ewt_bad\.conllu:3:"):
        data.read_conllu(FIX / "data_ewt_bad.conllu")


def test_cli_error_is_one_clean_line(capsys):
    with pytest.raises(SystemExit) as e:
        data.main(["inspect", str(FIX / "data_sst2_bad.tsv")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data_sst2_bad.tsv:3:" in err and err.count("\n") == 1


# ---- locations ----

def test_resolve_corpus(tmp_path, monkeypatch):
    wiki = tmp_path / "wiki_en_2015"
    wiki.mkdir()
    (wiki / "wiki.train.txt.gz").write_bytes(gzip.compress(b"a b\n"))
    (wiki / "wiki.valid.txt").write_text("c d\n", encoding="utf-8")
    (wiki / "wiki.train.small.txt").write_text("a b\n", encoding="utf-8")
    monkeypatch.setenv("MINIBERT_DATA_DIR", str(tmp_path))
    assert download.default_data_dir() == tmp_path
    train, valid, desc = download.resolve_corpus(data_dir=tmp_path)
    assert train == wiki / "wiki.train.txt.gz" and valid == wiki / "wiki.valid.txt" and "default" in desc
    train, valid, _ = download.resolve_corpus(wiki / "wiki.train.small.txt")
    assert valid == wiki / "wiki.valid.txt"
    with pytest.raises(FileNotFoundError, match="--corpus"):
        download.resolve_corpus(data_dir=tmp_path / "empty")
    assert data.prepared_paths(wiki / "wiki.train.txt.gz", "out") == (Path("out/wiki.train.bin"),
                                                                      Path("out/wiki.train.json"))


# ---- prepare ----

def expected_stream(corpus, vocab):
    from tokenizer import WordPieceTokenizer
    tok = WordPieceTokenizer.load(vocab)
    out = []
    for doc in data.read_documents(corpus):
        for p in doc:
            out += tok.encode(p, add_special_tokens=False)
        out.append(tok.sep_id)
    return np.array(out)


def test_prepare_exact_ids_cache_and_rebuild(tmp_path):
    corpus = tmp_path / "mini.train.txt"
    shutil.copy(FIX / "data_corpus.txt", corpus)
    vocab = FIX / "data_vocab.txt"
    meta = data.prepare(corpus, vocab, tmp_path / "out", num_workers=1, docs_per_task=1, verbose=False)
    tokens, stored = data.load_tokens(meta["bin"])
    assert tokens.dtype == np.uint16
    np.testing.assert_array_equal(tokens, expected_stream(corpus, vocab))
    assert stored["n_documents"] == 3 and stored["n_tokens"] == len(tokens) and stored["n_words"] == 70
    assert stored["vocab_hash"] == hashlib.sha256(vocab.read_bytes()).hexdigest()
    assert not list((tmp_path / "out").glob("*.part"))
    mtime = Path(meta["bin"]).stat().st_mtime_ns
    assert data.prepare(corpus, vocab, tmp_path / "out", verbose=False)["seconds"] == stored["seconds"]
    assert Path(meta["bin"]).stat().st_mtime_ns == mtime                      # cached: not rewritten
    with open(corpus, "a", encoding="utf-8") as f:                             # corpus changes -> rebuild
        f.write("\nNewton\nIsaac Newton was an English physicist.\n")
    meta2 = data.prepare(corpus, vocab, tmp_path / "out", num_workers=1, verbose=False)
    assert meta2["n_documents"] == 4
    lines = vocab.read_text(encoding="utf-8").splitlines()                     # vocab changes -> rebuild
    lines[-1], lines[-2] = lines[-2], lines[-1]
    vocab2 = tmp_path / "vocab2.txt"
    vocab2.write_text("\n".join(lines) + "\n", encoding="utf-8")
    meta3 = data.prepare(corpus, vocab2, tmp_path / "out", num_workers=1, verbose=False)
    assert meta3["vocab_hash"] != meta2["vocab_hash"]
    np.testing.assert_array_equal(data.load_tokens(meta3["bin"])[0], expected_stream(corpus, vocab2))


def test_prepare_reads_wikitext(tmp_path):
    meta = data.prepare(FIX / "data_wikitext.raw", FIX / "data_vocab.txt", tmp_path, num_workers=1,
                        verbose=False)
    assert meta["n_documents"] == 2
    assert int((data.load_tokens(meta["bin"])[0] == 3).sum()) == 2


def test_load_corpus_and_holdout_split(tmp_path, capsys):
    corpus = tmp_path / "mini.train.txt"
    shutil.copy(FIX / "data_corpus.txt", corpus)
    shutil.copy(FIX / "data_corpus.txt", tmp_path / "mini.valid.txt")
    tok, tokens, valid, info = data.load_corpus(corpus, vocab=FIX / "data_vocab.txt", cache_dir=tmp_path / "out",
                                                num_workers=1)
    assert (tmp_path / "out" / "mini.train.bin").is_file() and (tmp_path / "out" / "mini.valid.bin").is_file()
    assert info["valid"] == str((tmp_path / "mini.valid.txt").resolve()) and len(valid) == len(tokens)
    assert info["vocab_hash"] == tok.vocab_hash()
    assert "validation " + str(tmp_path / "mini.valid.txt") in capsys.readouterr().out
    a, b = data.holdout_split(tokens, 10)
    assert len(b) == 10 and len(a) + 10 == len(tokens) and np.array_equal(b, tokens[-10:])


# ---- MLM batches ----

def stream(n=5000):
    return (5 + np.arange(n)).astype(np.uint16)          # distinct values: a row's start is readable


def test_packed_rows_are_full_and_contiguous():
    T, B = 16, 8
    loader = data.PackedBatches(stream(), T, B, seed=0)
    starts = []
    for _ in range(loader.rows_per_epoch // B):
        x = loader.next_batch()
        assert x.shape == (B, T) and x.dtype == np.int64
        assert np.all(x[:, 0] == 2) and np.all(x[:, -1] == 3) and not np.any(x == 0)   # no padding
        assert np.all(np.diff(x[:, 1:-1], axis=1) == 1)                                  # consecutive
        starts += (x[:, 1] - 5).tolist()
    assert len(set(starts)) == len(starts)                                              # no row twice
    assert len({s % (T - 2) for s in starts}) == 1                                      # one offset


def test_packed_padding_fraction_zero_on_prepared_corpus(tmp_path):
    meta = data.prepare(FIX / "data_corpus.txt", FIX / "data_vocab.txt", tmp_path, num_workers=1,
                        verbose=False)
    tokens, _ = data.load_tokens(meta["bin"])
    loader = data.PackedBatches(tokens, 12, 4, seed=1)
    for _ in range(20):                                   # several epochs of this tiny corpus
        x = loader.next_batch()
        assert (x == 0).sum() == 0 and x[0, 0] == 2 and x[0, -1] == 3


def test_packed_deterministic_per_seed_and_new_order_per_epoch():
    a = data.PackedBatches(stream(), 16, 8, seed=3)
    b = data.PackedBatches(stream(), 16, 8, seed=3)
    c = data.PackedBatches(stream(), 16, 8, seed=4)
    xa, xb, xc = a.next_batch(), b.next_batch(), c.next_batch()
    assert np.array_equal(xa, xb) and not np.array_equal(xa, xc)
    e0 = a._starts.copy()
    a._set_epoch(1)
    assert not np.array_equal(e0[:20], a._starts[:20])


def test_packed_exact_resume_across_an_epoch_boundary():
    a = data.PackedBatches(stream(2000), 16, 24, seed=7)           # 142 rows per epoch: not a multiple of 24
    for _ in range(5):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))                 # survives a JSON round trip
    expect = [a.next_batch() for _ in range(4)]                    # crosses into epoch 1
    assert a.epoch == 1
    b = data.PackedBatches(stream(2000), 16, 24, seed=0)
    b.load_state_dict(state)
    for x in expect:
        assert np.array_equal(b.next_batch(), x)
    with pytest.raises(ValueError, match="seq_len"):
        data.PackedBatches(stream(2000), 32, 24).load_state_dict(state)


def test_heldout_batches_fixed():
    h1 = data.heldout_batches(stream(), 16, 4, 3)
    h2 = data.heldout_batches(stream(), 16, 4, 3)
    assert len(h1) == 3 and all(np.array_equal(a, b) for a, b in zip(h1, h2))
    assert h1[0].shape == (4, 16) and np.all(h1[0][:, 0] == 2) and np.all(h1[0][:, -1] == 3)
    with pytest.raises(ValueError, match="fewer batches"):
        data.heldout_batches(stream(100), 16, 4, 3)


# ---- padded batches ----

def test_pad_batch_and_labels():
    ids, mask = data.pad_batch([[2, 7, 3], [2, 3], [2, 8, 9, 3]])
    assert ids.tolist() == [[2, 7, 3, 0], [2, 3, 0, 0], [2, 8, 9, 3]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    labels, _ = data.pad_batch([[1, 2], [3]], pad_id=-100)
    assert labels.tolist() == [[1, 2], [3, -100]] and labels.dtype == np.int64


def test_bucket_batches_cover_everything_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1000)
    batches = data.bucket_batches(lengths, 32, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    again = data.bucket_batches(lengths, 32, rng=np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))

    def pad_frac(bs):
        return 1 - sum(lengths[b].sum() for b in bs) / sum(len(b) * lengths[b].max() for b in bs)
    plain = [np.arange(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]
    assert pad_frac(batches) < 0.5 * pad_frac(plain)
    eval_batches = data.bucket_batches(lengths, 32)
    assert np.all(np.diff(lengths[np.concatenate(eval_batches)]) >= 0)


# ---- downloads (local server, 127.0.0.1 only) ----

def sst2_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            z.writestr(f"SST-2/{name}", (FIX / "data_sst2.tsv").read_text(encoding="utf-8"))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.timeout = 5
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/files", hits
    httpd.shutdown()
    httpd.server_close()
    t.join(timeout=5)


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_download_verify_extract_and_skip(server, tmp_path, monkeypatch):
    root, base, hits = server
    (root / "files").mkdir()
    blob = sst2_zip()
    (root / "files" / "SST-2.zip").write_bytes(blob)
    sub, files, members = download.DATASETS["sst2"]
    monkeypatch.setitem(download.DATASETS, "sst2",
                        (sub, [(files[0][0], files[0][1], "sha256:" + hashlib.sha256(blob).hexdigest())], members))
    folder = download.download("sst2", tmp_path / "data", base_url=base)
    assert folder == tmp_path / "data" / "sst2"
    s, y = data.read_sst2(folder / "dev.tsv")
    assert len(s) == 3 and not list(folder.glob("*.part"))
    n = len(hits)
    download.download("sst2", tmp_path / "data", base_url=base)                    # present: skipped
    assert len(hits) == n


def test_download_bad_checksum_keeps_nothing(server, tmp_path, monkeypatch):
    root, base, _ = server
    (root / "files").mkdir()
    (root / "files" / "SST-2.zip").write_bytes(sst2_zip())
    sub, files, members = download.DATASETS["sst2"]
    monkeypatch.setitem(download.DATASETS, "sst2", (sub, [(files[0][0], files[0][1], "sha256:" + "0" * 64)], members))
    with pytest.raises(download.DownloadError, match="expected 0000"):
        download.download("sst2", tmp_path / "data", base_url=base)
    assert not (tmp_path / "data" / "sst2").exists()


def test_download_offline_message(tmp_path, capsys):
    url = closed_port_url()
    with pytest.raises(SystemExit):
        data.main(["download", "ud-ewt", "--data-dir", str(tmp_path / "d"), "--base-url", url])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: could not download")
    assert f"{url}/en_ewt-ud-train.conllu" in err and str(tmp_path / "d" / "ud_english_ewt") in err
    assert "--corpus" in err
    assert not (tmp_path / "d" / "ud_english_ewt").exists()


# ---- BLiMP: 67 files pinned to one commit ----

def test_blimp_table_pins_every_paradigm_to_one_commit():
    sub, files, members = download.DATASETS["blimp"]
    assert sub == "blimp" and members == [] and len(files) == 67 == len(download.BLIMP_SHA256)
    for url, fname, checksum in files:
        assert url == (f"https://raw.githubusercontent.com/alexwarstadt/blimp/{download.BLIMP_COMMIT}/data/{fname}")
        assert fname.endswith(".jsonl") and checksum.startswith("sha256:") and len(checksum) == 7 + 64
        int(checksum[7:], 16)
    assert download.DATASET_FILES["blimp"] == (["blimp/adjunct_island.jsonl"], "python data.py download blimp")


def blimp_rows(uid, field, n):
    return "".join(json.dumps({"sentence_good": f"Good {i}.", "sentence_bad": f"Bad {i}.", "field": field,
                               "UID": uid, "pairID": str(i)}) + "\n" for i in range(n))


def test_blimp_download_verify_and_skip(server, tmp_path, monkeypatch):
    root, base, hits = server
    (root / "files").mkdir()
    blobs = {"par_a": blimp_rows("par_a", "syntax", 3), "par_b": blimp_rows("par_b", "semantics", 2)}
    for uid, text in blobs.items():
        (root / "files" / f"{uid}.jsonl").write_text(text, encoding="utf-8")
    sha = {uid: hashlib.sha256(text.encode("utf-8")).hexdigest() for uid, text in blobs.items()}
    files = [(f"https://raw.githubusercontent.com/x/{uid}.jsonl", f"{uid}.jsonl", f"sha256:{h}")
             for uid, h in sha.items()]
    monkeypatch.setitem(download.DATASETS, "blimp", ("blimp", files, []))
    folder = download.download("blimp", tmp_path / "data", base_url=base)
    assert sorted(p.name for p in folder.iterdir()) == ["par_a.jsonl", "par_b.jsonl"]
    assert [r["sentence_bad"] for r in data.read_blimp(folder / "par_a.jsonl")] == ["Bad 0.", "Bad 1.", "Bad 2."]
    assert data.read_blimp(folder / "par_b.jsonl", max_pairs=1)[0]["field"] == "semantics"
    n = len(hits)
    download.download("blimp", tmp_path / "data", base_url=base)                  # present: skipped
    assert len(hits) == n


def test_blimp_download_bad_checksum_keeps_no_bad_file(server, tmp_path, monkeypatch):
    root, base, _ = server
    (root / "files").mkdir()
    text = blimp_rows("par_a", "syntax", 3)
    (root / "files" / "par_a.jsonl").write_text(text, encoding="utf-8")
    (root / "files" / "par_b.jsonl").write_text(blimp_rows("par_b", "syntax", 2) + "changed upstream\n",
                                                encoding="utf-8")
    files = [("https://x/par_a.jsonl", "par_a.jsonl", "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()),
             ("https://x/par_b.jsonl", "par_b.jsonl",
              "sha256:" + hashlib.sha256(blimp_rows("par_b", "syntax", 2).encode("utf-8")).hexdigest())]
    monkeypatch.setitem(download.DATASETS, "blimp", ("blimp", files, []))
    with pytest.raises(download.DownloadError, match="par_b.jsonl: sha256 is .* expected"):
        download.download("blimp", tmp_path / "data", base_url=base)
    assert sorted(p.name for p in (tmp_path / "data" / "blimp").iterdir()) == ["par_a.jsonl"]   # the good one stays


def test_blimp_download_offline_message(tmp_path, capsys):
    url = closed_port_url()
    with pytest.raises(SystemExit):
        data.main(["download", "blimp", "--data-dir", str(tmp_path / "d"), "--base-url", url])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: could not download")
    assert f"{url}/adjunct_island.jsonl" in err and str(tmp_path / "d" / "blimp") in err
    assert not (tmp_path / "d" / "blimp").exists()


@pytest.mark.parametrize("line, words", [
    ("not json", ["bad.jsonl:2", "not a JSON object"]),
    (json.dumps({"sentence_good": "A.", "field": "syntax", "UID": "u"}), ["bad.jsonl:2", "sentence_bad"]),
    (json.dumps({"sentence_good": "A.", "sentence_bad": "B.", "field": "syntax", "UID": "other"}),
     ["bad.jsonl:2", "one paradigm per file"]),
])
def test_read_blimp_names_file_and_line(tmp_path, line, words):
    p = tmp_path / "bad.jsonl"
    p.write_text(blimp_rows("u", "syntax", 1) + line + "\n", encoding="utf-8")
    with pytest.raises(data.DataFormatError) as e:
        data.read_blimp(p)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert len(data.read_blimp(p, max_pairs=1)) == 1                              # line 2 never read
