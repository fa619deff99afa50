"""The other-chat check's reader (`fl_pipeline.bench.other_chat`): ChatterBot-corpus
dialogues and plain text become the messages the typist types, and unreadable input is
refused with one line."""

import subprocess
import sys

from fl_pipeline.bench.other_chat import read_messages

CHATTERBOT = """categories:
- greetings
conversations:
- - Hello
  - Hi, how are you?
- - "What's up?"
  - 'Not much: you?'
  - - nested dash stays text
"""


def test_chatterbot_dialogue_lines_are_messages_quotes_removed(tmp_path):
    path = tmp_path / "greetings.yml"
    path.write_text(CHATTERBOT)
    assert read_messages(path) == ["Hello", "Hi, how are you?", "What's up?", "Not much: you?",
                                   "nested dash stays text"]


def test_a_text_file_is_one_message_per_non_blank_line(tmp_path):
    path = tmp_path / "chat.txt"
    path.write_text("see you soon\n\n  on my way  \n")
    assert read_messages(path) == ["see you soon", "on my way"]


def test_a_missing_or_empty_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    for name in ("missing.yml", "empty.txt"):
        done = subprocess.run([sys.executable, "-m", "fl_pipeline.bench.other_chat", "model", "run",
                               str(tmp_path / name)], capture_output=True, text=True)
        assert done.returncode == 2 and name in done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2 and "Traceback" not in done.stderr
