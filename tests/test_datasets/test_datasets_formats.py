"""JSONL, CSV, directory and SQL corpus readers: good input, each kind of bad input,
and arbitrary bytes (which must parse or raise a FedKBError, never anything else)."""

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.corpus import MAX_LINE_BYTES, CorpusError, ReadLog
from datasets.errors import FedKBError
from datasets.fortunes import read_fortune_files
from datasets.readers import read_corpus
from datasets.sql_corpus import read_sql_client_data
from datasets.text_formats import read_csv, read_directory, read_jsonl


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return path


def test_jsonl_groups_texts_by_client_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"client_id": "ann", "text": "first", "extra": 1}, {"client_id": 7, "text": "seven"},
        {"client_id": "ann", "text": "second"}])
    (tmp_path / "c.jsonl").write_text(path.read_text() + "\n  \n")  # blank lines are no texts
    corpus = read_jsonl(path, ReadLog())
    assert corpus.clients == {"ann": ["first", "second"], "7": ["seven"]}


def test_csv_uses_the_named_columns_and_quoted_multiline_fields(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('when,text,client_id\n1,"hello, world",bo\n2,"two\nlines",bo\n3,hi,cy\n')
    corpus = read_csv(path, ReadLog())
    assert corpus.clients == {"bo": ["hello, world", "two\nlines"], "cy": ["hi"]}


def test_directory_reads_files_and_subdirectories_one_text_per_line(tmp_path):
    (tmp_path / "ann.txt").write_text("one\n\ntwo\r\n")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "b.txt").write_text("later\n")
    (tmp_path / "bob" / "a.txt").write_text("earlier\n")
    corpus = read_directory(tmp_path, ReadLog())
    assert corpus.clients == {"ann": ["one", "two"], "bob": ["earlier", "later"]}


# --- bad input: each stops with a message naming the file and line ------------------------


GOOD_LINE = b'{"client_id": "a", "text": "fine"}\n'
# (name, second line, message after "<file>", does client "b" end up without texts)
BAD_JSONL_LINES = [
    ("not_json", b"{not json", ":2: not a JSON object (Expecting property name", False),
    ("not_object", b"[1, 2]", ":2: expected a JSON object, got a JSON list", False),
    ("missing_text", b'{"client_id": "b"}', ":2: the object lacks 'text'", False),
    ("bad_client_id", b'{"client_id": null, "text": "x"}', ':2: "client_id" must be', False),
    ("text_not_string", b'{"client_id": "b", "text": 3}', ':2: "text" must be a string', True),
    ("lone_surrogate", b'{"client_id": "b", "text": "\\ud800"}', ':2: "text" must be', True),
    ("empty_text", b'{"client_id": "b", "text": "  \\n "}', ":2: empty text", True),
    ("not_utf8", b'{"client_id": "b", "text": "caf\xe9"}', ":2: bytes that are not UTF-8", False),
    ("one_megabyte_line", json.dumps({"client_id": "b", "text": "x" * 1_000_000}).encode(),
     f":2: line longer than {MAX_LINE_BYTES:,} bytes", False),
]


@pytest.mark.parametrize("name,line,message,client_without_texts", BAD_JSONL_LINES,
                         ids=[case[0] for case in BAD_JSONL_LINES])
def test_each_bad_jsonl_line_names_file_and_line_and_skipping_counts_it(
        tmp_path, name, line, message, client_without_texts):
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(GOOD_LINE + line + b"\n" + GOOD_LINE)
    with pytest.raises(CorpusError) as error:
        read_jsonl(path, ReadLog())
    assert str(error.value).startswith(str(path) + message)
    assert str(error.value).endswith("pass --skip-bad-lines to skip it")
    log = ReadLog(skip_bad_lines=True)
    corpus = read_jsonl(path, log)
    assert corpus.clients == {"a": ["fine", "fine"]}
    assert log.num_bad_lines + log.empty_texts == 1
    assert log.clients_without_texts == int(client_without_texts)


def test_empty_files_are_reported_in_every_format(tmp_path):
    for name in ("e.jsonl", "e.csv", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    for reader, path in ((read_jsonl, tmp_path / "e.jsonl"), (read_csv, tmp_path / "e.csv")):
        with pytest.raises(CorpusError, match="e\\.(jsonl|csv): file is empty"):
            reader(path, ReadLog())
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "ann.txt").write_bytes(b"")
    (directory / "bob.txt").write_text("hi\n")
    with pytest.raises(CorpusError, match="ann.txt: file is empty"):
        read_directory(directory, ReadLog())
    log = ReadLog(skip_bad_lines=True)
    assert read_directory(directory, log).clients == {"bob": ["hi"]}
    assert (log.empty_files, log.clients_without_texts) == (1, 1)


def test_csv_without_the_needed_columns_names_what_it_found(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("user,message\nann,hi\n")
    with pytest.raises(CorpusError, match=r"c\.csv:1: the CSV header has columns \['user', "
                                          r"'message'\]; it needs 'client_id' and 'text'"):
        read_csv(path, ReadLog())


def test_csv_short_rows_and_bad_bytes_are_line_errors(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"client_id,text\nann,hi\nbob\ncy,caf\xe9\ndee,ok\n")
    with pytest.raises(CorpusError, match=r"c\.csv:3: the row has 1 fields"):
        read_csv(path, ReadLog())
    log = ReadLog(skip_bad_lines=True)
    assert read_csv(path, log).clients == {"ann": ["hi"], "dee": ["ok"]}
    assert dict(log.bad_lines) == {"missing_field": 1, "not_utf8": 1}


def test_directory_with_duplicate_client_ids_names_both(tmp_path):
    (tmp_path / "ann.txt").write_text("hi\n")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "more.txt").write_text("there\n")
    with pytest.raises(CorpusError, match="ann and .*ann.txt both hold client 'ann'"):
        read_directory(tmp_path, ReadLog())


def test_directory_with_other_files_says_what_it_expects(tmp_path):
    (tmp_path / "ann.txt").write_text("hi\n")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with pytest.raises(CorpusError, match="notes.pdf: not a .txt file or a directory"):
        read_directory(tmp_path, ReadLog())
    log = ReadLog(skip_bad_lines=True)
    assert read_directory(tmp_path, log).clients == {"ann": ["hi"]}
    assert log.skipped_files == 1


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="nothing.jsonl: no such file or directory"):
        read_corpus(str(tmp_path / "nothing.jsonl"), ReadLog())
    (tmp_path / "c.xml").write_text("<a/>")
    with pytest.raises(CorpusError, match="unknown corpus format '.xml'"):
        read_corpus(str(tmp_path / "c.xml"), ReadLog())


def test_skip_warning_counts_reasons_and_quotes_the_first_problems(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"client_id": "a", "text": "ok"}\nnope\n[]\n\xff\n{"client_id": "a", "text": ""}\n')
    log = ReadLog(skip_bad_lines=True)
    read_jsonl(path, log)
    warning = log.warning()
    assert warning.startswith("skipped 3 bad lines (2 not json, 1 not utf8), 1 empty texts")
    assert f"{path}:2: not a JSON object" in warning
    assert log.counts()["bad_lines_by_reason"] == {"not_json": 2, "not_utf8": 1}


def test_sql_reader_rejects_non_databases_and_foreign_schemas(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(CorpusError, match="c.sqlite: not a readable SQLite database"):
        read_sql_client_data(path, ReadLog())
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x TEXT)")
    with pytest.raises(CorpusError, match="missing client_metadata, examples"):
        read_sql_client_data(path, ReadLog())


# --- arbitrary bytes: parse or FedKBError, nothing else ------------------------------------

ARBITRARY = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
# Bytes that look like the formats often enough to reach the deeper checks.
FORMAT_BYTES = st.lists(st.sampled_from([
    b"\n", b"\r\n", b"%\n", b"%%x\n", b'"', b",", b"{", b"}", b"[", b'"client_id"', b'"text"',
    b":", b" ", b"\t\t-- ", b"client_id,text\n", b"\xff", b"\xe9", b"\x00", b"\\ud800", b"a",
    b"1", b"Author", b"(c) X, 1", b"\xef\xbb\xbf"]), max_size=40).map(b"".join)
ANY_BYTES = st.one_of(st.binary(max_size=300), FORMAT_BYTES)


def parses_or_fedkb_error(read, path, skip):
    try:
        corpus = read(path, ReadLog(skip_bad_lines=skip))
    except FedKBError:
        return
    for client, texts in corpus.clients.items():
        assert isinstance(client, str) and client
        assert all(isinstance(t, str) and t.strip() for t in texts)


@ARBITRARY
@given(data=ANY_BYTES, skip=st.booleans())
def test_jsonl_reader_on_arbitrary_bytes(tmp_path, data, skip):
    (tmp_path / "a.jsonl").write_bytes(data)
    parses_or_fedkb_error(read_jsonl, tmp_path / "a.jsonl", skip)


@ARBITRARY
@given(data=ANY_BYTES, skip=st.booleans())
def test_csv_reader_on_arbitrary_bytes(tmp_path, data, skip):
    (tmp_path / "a.csv").write_bytes(b"client_id,text\n" + data)
    parses_or_fedkb_error(read_csv, tmp_path / "a.csv", skip)
    (tmp_path / "a.csv").write_bytes(data)
    parses_or_fedkb_error(read_csv, tmp_path / "a.csv", skip)


@ARBITRARY
@given(data=ANY_BYTES, skip=st.booleans())
def test_directory_reader_on_arbitrary_bytes(tmp_path, data, skip):
    directory = tmp_path / "corpus"
    (directory / "sub").mkdir(parents=True, exist_ok=True)
    (directory / "a.txt").write_bytes(data)
    (directory / "sub" / "b.txt").write_bytes(data[::-1])
    parses_or_fedkb_error(read_directory, directory, skip)


@ARBITRARY
@given(data=ANY_BYTES, skip=st.booleans())
def test_fortune_reader_on_arbitrary_bytes(tmp_path, data, skip):
    (tmp_path / "f").write_bytes(data)
    parses_or_fedkb_error(lambda p, log: read_fortune_files([p], log), tmp_path / "f", skip)


@ARBITRARY
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(
    lambda b: b"SQLite format 3\x00" + b)), skip=st.booleans())
def test_sql_reader_on_arbitrary_bytes(tmp_path, data, skip):
    (tmp_path / "a.sqlite").write_bytes(data)
    parses_or_fedkb_error(read_sql_client_data, tmp_path / "a.sqlite", skip)
