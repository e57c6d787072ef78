"""LEARNING.md stays true: every ```bash block in it is run from the repository root, and its stdout is
compared with the ```text block that follows (the rules are in the HTML comment at the top of LEARNING.md).
Commands that read runs/mini run on a tiny fixture checkpoint written here instead (mini's 3 layers and 4
heads at H=8, a 29-piece vocab, tiny EWT / SST-2 / wiki files), and are checked for exit 0 and the shape
of their output. ```shell blocks (runs of minutes or hours) are not run: their train.py flags are parsed.
Every relative link in LEARNING.md must point at a file, and at a heading where it names one.
About 30 s on 2 cores, most of it Python start-ups."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
LEARNING = REPO / "LEARNING.md"
FIX = Path(__file__).resolve().parent / "fixtures"
RUN = "runs/mini"                                                   # the trained model the guide reads
NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?|nan|inf"      # any number, as printed


# ---- reading LEARNING.md ----

def fenced_blocks(text):
    """[(line number, info string, body)] of every ``` fenced block, HTML comments left out."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            blocks.append((i + 1, m.group(1), "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return blocks


def steps(text):
    """[(line, command, expected lines)]: each ```bash block and the ```text block right after it."""
    out, blocks = [], fenced_blocks(text)
    for k, (line, info, body) in enumerate(blocks):
        if info == "bash":
            nxt = blocks[k + 1] if k + 1 < len(blocks) else None
            assert nxt is not None and nxt[1] == "text", f"LEARNING.md:{line}: a ```bash block needs its ```text output"
            out.append((line, body.strip(), [l.rstrip() for l in nxt[2].split("\n")]))
    return out


def line_pattern(line, loose):
    """The regex for one expected line: exact; with '  # varies' (or loose) any numbers, and any run of spaces
    where it has one (padded columns); anything with '  # any'."""
    if line.endswith("  # any"):
        return ".*"
    if line.endswith("  # varies"):
        line, loose = line[:-len("  # varies")].rstrip(), True
    if not loose:
        return re.escape(line)
    literal = lambda part: "[ \t]*".join(re.escape(w) for w in re.split(r"[ \t]+", part))   # widths vary too
    return f"(?:{NUMBER})".join(literal(p) for p in re.split(NUMBER, line))


def matches(expected, actual, loose=False):
    """True when the output lines match the expected ones ('...' = any number of lines)."""
    rx = "".join(r"(?:.*\n)*" if l == "..." else line_pattern(l, loose) + r"[ \t]*\n" for l in expected)
    return re.fullmatch(rx, "".join(l.rstrip() + "\n" for l in actual)) is not None


TEXT = LEARNING.read_text(encoding="utf-8")
STEPS = steps(TEXT)


# ---- the fixture that stands in for runs/mini ----

@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    """tmp/runs/mini (best.npz, vocab.txt, run.json as train.py writes them) and tmp/data (MINIBERT_DATA_DIR)."""
    from config import get_config
    from model import MiniBERT
    from tokenizer import WordPieceTokenizer
    root = tmp_path_factory.mktemp("learning")
    tokens = FIX.joinpath("eval_vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    tok = WordPieceTokenizer(tokens + ["capital", "of", "france", "paris"])
    run = root / "runs" / "mini"
    run.mkdir(parents=True)
    tok.save(run / "vocab.txt")
    config = get_config("tiny", vocab_size=tok.vocab_size, num_hidden_layers=3, num_attention_heads=4,
                        max_position_embeddings=16)
    MiniBERT(config, seed=0).save(run / "best.npz")
    (run / "run.json").write_text(json.dumps({"vocab_file": str(run / "vocab.txt"), "vocab_hash": tok.vocab_hash(),
                                              "config": config.to_dict()}), encoding="utf-8")
    data = root / "data"
    (data / "ud_english_ewt").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copy(FIX / "eval_sample.conllu", data / "ud_english_ewt" / f"en_ewt-ud-{split}.conllu")
    (data / "sst2").mkdir()
    header, *rows = FIX.joinpath("eval_sst2.tsv").read_text(encoding="utf-8").splitlines()
    (data / "sst2" / "train.tsv").write_text("\n".join([header] + rows * 100) + "\n", encoding="utf-8")  # > 1000
    shutil.copy(FIX / "eval_sst2.tsv", data / "sst2" / "dev.tsv")
    (data / "wiki_en_2015").mkdir()
    words = np.random.default_rng(0).choice(tokens[5:], 3000)
    (data / "wiki_en_2015" / "wiki.valid.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    return run, data


def run_step(command, fixture):
    assert "$" not in command and "`" not in command, "keep commands free of shell expansions"
    argv = shlex.split(command)                                     # POSIX rules: what bash would pass
    assert argv[0] == "python", "each command starts with python"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    if fixture is not None:
        run, data = fixture
        argv = [a.replace(RUN, str(run)) for a in argv]
        env["MINIBERT_DATA_DIR"] = str(data)
    proc = subprocess.run([sys.executable] + argv[1:], cwd=REPO, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=300)
    out = proc.stdout if fixture is None else proc.stdout.replace(str(fixture[0]), RUN)
    return proc.returncode, out.splitlines(), proc.stderr


# ---- the tests ----

def test_the_matcher_can_fail():
    assert matches(["a 1.5 b", "...", "end"], ["a 1.5 b", "x", "y", "end"])
    assert not matches(["a 1.5 b"], ["a 1.6 b"])
    assert matches(["a 1.5 b  # varies"], ["a -2e-05 b"]) and not matches(["a 1.5 b  # varies"], ["c 1.5 b"])
    assert matches(["x  # any", "y"], ["anything", "y"]) and not matches(["x  # any"], [])
    assert not matches(["a"], ["a", "b"]) and matches(["a"], ["a   "])
    assert matches(["layer 3 | 0.5"], ["layer 2 | 0.7"], loose=True) and not matches(["layer 3"], ["layers 3"], loose=True)
    assert matches(["ppl    728.4  # varies"], ["ppl     29.0"]) and matches(["D=    4  # varies"], ["D= 1024"])


def test_learning_has_six_phases_of_steps():
    phases = re.findall(r"^## Phase (\d)", TEXT, flags=re.M)
    assert phases == [str(i) for i in range(1, 7)]
    assert len(STEPS) >= 25
    assert TEXT.count("<details><summary>Answer</summary>") >= len(STEPS)    # a question per step


@pytest.mark.parametrize("line, command, expected", STEPS, ids=[f"line{s[0]}" for s in STEPS])
def test_step(line, command, expected, request):
    fixture = request.getfixturevalue("fixture_run") if RUN in command else None
    rc, out, err = run_step(command, fixture)
    assert rc == 0, f"LEARNING.md:{line}: exit {rc}\n{err[-3000:]}"
    assert matches(expected, out, loose=fixture is not None), (
        f"LEARNING.md:{line}: output differs\n--- expected\n" + "\n".join(expected) + "\n--- got\n" + "\n".join(out)
        + "\n--- stderr\n" + err[-2000:])


def test_long_commands_parse():
    """```shell blocks are not run; their scripts exist and train.py accepts their flags."""
    import train
    shell = [(line, body) for line, info, body in fenced_blocks(TEXT) if info == "shell"]
    assert shell
    for line, body in shell:
        for cmd in filter(None, (c.split("#")[0].strip() for c in body.split("\n"))):
            argv = shlex.split(cmd)
            assert argv[0] == "python" and (REPO / argv[1]).is_file(), f"LEARNING.md:{line}: {cmd}"
            if argv[1] == "train.py":
                train.build_parser().parse_args(argv[2:])            # exits (fails) on an unknown flag


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_point_at_files_and_headings():
    text = re.sub(r"<!--.*?-->", "", TEXT, flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"\w+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = REPO / path if path else LEARNING
        assert target.is_file(), f"LEARNING.md links to {link}: no such file"
        if anchor and target.suffix == ".md":
            heads = re.findall(r"^#+ (.*)$", target.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {slug(h) for h in heads}, f"LEARNING.md links to {link}: no such heading"
