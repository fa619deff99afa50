"""The app core's cold start, run by `fedkb bench` in a fresh process.

    python -m fl_pipeline.bench.cold_start MODEL_DIR USER_DIR

Imports only the standard library before the first suggestion is ready, so
the time includes importing LiteRT, numpy and the app core, reading and
checking the model directory and the first suggestions
(`keyboard_app.session.cold_start`). Prints one JSON line: the wall-clock
time (time.time()) when the suggestions were ready, so the parent can add
the interpreter's own start-up; the seconds inside `cold_start`; the
resident memory of the process then and after typing a sentence; and
whether TensorFlow was imported (it must not be).
"""

import time

_STARTED = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

SENTENCE = "Thank you for the lovely dinner, see you "


def main(model_dir: str, user_dir: str) -> dict:
    from keyboard_app.session import cold_start

    session, open_seconds = cold_start(model_dir, user_dir)
    ready_wall = time.time()
    ready = time.perf_counter() - _STARTED
    import psutil  # after the clock: the app itself does not need it

    rss_ready = psutil.Process().memory_info().rss
    session.type_text(SENTENCE)
    result = {"ready_wall_time": ready_wall, "seconds_since_imports_began": ready,
              "cold_start_seconds": open_seconds, "rss_bytes_ready": rss_ready,
              "rss_bytes_after_typing": psutil.Process().memory_info().rss,
              "suggestions": list(session.suggestions),
              "tensorflow_imported": "tensorflow" in sys.modules}
    session.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])), flush=True)
