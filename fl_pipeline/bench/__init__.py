"""`fedkb bench`: one reproducible report of quality, speed, size and communication.

    config.py         BenchConfig: sizes, rounds, repetitions (quick / full / tiny presets)
    figures.py        a Figure: value, unit, how it was measured, budget; timing summaries
    texts.py          the raw texts behind a prepared store (held-out messages, bytes)
    quality.py        federated vs baselines, learning curves, DP, personalization
    speed.py          TFF round vs a plain tf.function loop, workers, memory, prepare
    device.py         model size, suggest/train latency, refresh, fine-tuning, cold start
    cold_start.py     run in a fresh process: app core start to first suggestion
    communication.py  bytes uploaded vs the raw text centralized training collects
    other_chat.py     the exported model on chat from another source (a command of its own)
    minutes.py        keyboard quality against training minutes (a command of its own)
    flower_peer.py    FedKB's round against the same round in Flower (two commands, two envs)
    runner.py         runs it all in order and writes bench.json
    report.py         REPORT.md, the plots, and the README's "Results" section

This file imports nothing, so `python -m fl_pipeline.bench.cold_start` starts
as light as the app does.
"""
