"""Real typed chat: the Chit-Chat Challenge data set, one client per person who typed.

The `chitchat-dataset` package (BYU PCC lab, MIT license) installs
`chitchat_dataset/dataset.json`: 7,168 conversations between 1,315 people,
258,145 chat messages in all. Its structure, as shipped in 0.9.0::

    {"<conversation id>": {"start": ..., "prompt": ..., "ratings": ...,
                           "messages": [[{"text": "Hello", "sender": "<person id>",
                                          "timestamp": "2018-05-02T19:38:15Z"}, ...], ...]}}

`messages` is the list of turns; a turn is the list of messages one person
sent in a row, each sent on its own (so each one is a text here). Every
person's messages, from all of their conversations, form one client
(`chitchat:<person id>`), sorted by timestamp (ties keep the file's order:
634 people's messages are not in time order in the file), so a client's
earlier texts really were typed before its later ones.

The 33 empty messages of the data set are counted in `stats.json`, never an
error: they are not the user's to fix. Anything else that does not match the
structure above means a broken install and stops with one line naming the
file and what to do.
"""

from __future__ import annotations

import importlib.metadata
import json
from datetime import datetime, timezone
from pathlib import Path

from datasets.corpus import Corpus, CorpusError, ReadLog

PACKAGE = "chitchat-dataset"
DATA_FILE = "chitchat_dataset/dataset.json"
LICENSE = "MIT"
INSTALL_HINT = f"reinstall it with `pip install {PACKAGE}` (or run `uv sync` in the FedKB checkout)"


def dataset_file() -> Path:
    """The installed `dataset.json`, found through the package's own file list (no import)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(f"the chitchat corpus needs the {PACKAGE} package; "
                          f"{INSTALL_HINT.replace('reinstall', 'install')}") from None
    path = Path(dist.locate_file(DATA_FILE)).resolve()
    if not path.is_file():
        raise CorpusError(f"{path}: missing from the installed {PACKAGE} package; {INSTALL_HINT}")
    return path


def _broken(path: Path, where: str, what: str) -> CorpusError:
    return CorpusError(f"{path}: {where}: {what}, not the {PACKAGE} format; {INSTALL_HINT}")


def _messages(path: Path, data: object):
    """(timestamp, sender, text, where) of every message, in file order; checks the structure."""
    if not isinstance(data, dict) or not data:
        raise _broken(path, "top level", "expected an object of conversations")
    for conversation_id, conversation in data.items():
        turns = conversation.get("messages") if isinstance(conversation, dict) else None
        if not isinstance(turns, list):
            raise _broken(path, f"conversation {conversation_id}", "no list of 'messages'")
        for t, turn in enumerate(turns):
            for m, message in enumerate(turn if isinstance(turn, list) else [None]):
                where = f"conversation {conversation_id}, turn {t + 1}, message {m + 1}"
                fields = message if isinstance(message, dict) else {}
                text, sender, stamp = (fields.get(k) for k in ("text", "sender", "timestamp"))
                if not (isinstance(text, str) and isinstance(sender, str) and sender
                        and isinstance(stamp, str)):
                    raise _broken(path, where, "expected a message with string 'text', "
                                  "'sender' and 'timestamp'")
                try:
                    when = datetime.fromisoformat(stamp)
                except ValueError:
                    raise _broken(path, where, f"timestamp {stamp!r} is not ISO 8601") from None
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                yield when, sender, text, where


def read_chitchat(log: ReadLog, path: Path | None = None) -> Corpus:
    """One client per sender, their messages in timestamp order (`path`: for tests)."""
    path = path or dataset_file()
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path}: unreadable JSON ({e}); {INSTALL_HINT}") from None
    timed: dict[str, list[tuple[datetime, str]]] = {}
    for when, sender, text, where in _messages(path, data):
        client = f"chitchat:{sender}"
        timed.setdefault(client, [])
        if text.strip():
            timed[client].append((when, text))
        else:
            log.empty_text(f"{path}: {where}", fixable=False)
    clients = {c: [text for _, text in sorted(texts, key=lambda pair: pair[0])]  # stable: ties keep file order
               for c, texts in timed.items() if texts}
    log.clients_without_texts += len(timed) - len(clients)
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # a test's file, not the package
        version = "(not installed)"
    return Corpus("chitchat", f"{PACKAGE} {version} ({LICENSE} license): {path}", clients,
                  [str(path)])
