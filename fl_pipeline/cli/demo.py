"""`fedkb demo`: the whole pipeline, then the app.

Each stage reuses what an earlier demo left in the output folder (prepared
data, a finished or interrupted run, an export of that run's final weights),
so running it again goes straight to the app and an interrupted demo picks
up where it stopped.

By default the phones hold chitchat, real typed chat (a public data set
standing in for their private text), and train from a random start within
the demo's budget (about 6 minutes of training on 2 cores, 9 on a slow one). `--corpus
fortunes` is the older demo on the BSD fortunes. `--warm-start` (chitchat
only) first pretrains the model on the server on the fortunes, public text
no phone holds (`fedkb pretrain`, then `fedkb train --init-from`); it is not
the default because its pretraining alone takes longer than the whole demo
and, measured as a keyboard, it gave no better strip than the random start
(README, "Warm-start settings").

`FEDKB_DEMO_TINY=1` runs the same stages on a toy scale (60 clients per
corpus, 64 pretraining examples, 2 rounds of 3, an 8-dimensional model), for
the tests that run the commands the demo prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datasets.errors import FedKBError
from datasets.layout import DEMO_DIR, demo_paths, fedkb_command
from fl_pipeline.config import TrainConfig
from fl_pipeline.run_dir import CONFIG, SUMMARY, has_completed_round, read_json
from fl_pipeline.training.pretrain import PretrainConfig

# The phones' corpus -> the public text the server pretrains on with --warm-start: chitchat
# (real typed chat) from the built-in fortunes, public text no phone holds. The fortunes have no
# warm start: the only other built-in text is chitchat, and pretraining on typed chat to then
# federate quotations would make the public text the more keyboard-like one.
PUBLIC_TEXT = {"chitchat": "fortunes", "fortunes": None}

# The chitchat demo, sized to the demo's budget (about 6 minutes of training on 2 cores, 8-9
# with its evaluations on the slower machines of the README's measurements): 150 rounds of 5
# phones from a random start, each phone one pass over at most 16 of its windows in batches of
# 8. The README's levers at this budget: the number of server steps is what counts. Many small
# rounds beat fewer large ones (15 or 30 rounds of the training defaults, 64 windows x 2
# epochs, scored strip top-3 0.097 and 0.121), two local steps of 8 beat one of 16 (0.156 /
# 0.139 against 0.127 / 0.097 on seeds 0 / 1), and 150 rounds of 5 phones beat 75 of 10 at
# the same example passes (0.180 / 0.162 against 0.156 / 0.139; on chat from another source
# 0.217 against 0.172), in 9-18% more time (233 s of training alone against 198-214 s).
CHITCHAT_TRAINING = TrainConfig(rounds=150, clients_per_round=5, max_examples_per_client=16,
                                local_epochs=1, batch_size=8, eval_every=50)
# The fortunes demo: 100 rounds of 10 phones from a random start, as before.
FORTUNES_TRAINING = TrainConfig(eval_every=25)
DEMO_TRAINING = {"chitchat": CHITCHAT_TRAINING, "fortunes": FORTUNES_TRAINING}
# --warm-start (README, lever table): pretraining on the fortunes, 60,000 example passes in
# batches of 16 (half as much scored 0.08 lower token top-3), then 75 federated rounds of
# 10 phones (a warm start peaked there under a constant rate, then overshot) whose server
# learning rate decays (cosine) from 0.03 to 0, so the late rounds take small steps.
DEMO_PRETRAIN = PretrainConfig(examples=60_000, batch_size=16)
WARM_TRAINING = TrainConfig(rounds=75, server_lr_schedule="cosine", eval_every=25)

TINY_ENV = "FEDKB_DEMO_TINY"
TINY_MAX_CLIENTS = 60
TINY_TRAINING = TrainConfig(rounds=2, clients_per_round=3, eval_every=2, checkpoint_every=2,
                            eval_clients=4, batch_size=8)
TINY_PRETRAIN = PretrainConfig(examples=64, batch_size=8)
TINY_MODEL = {"embedding_dim": 8, "lstm_units": 16}


def is_tiny() -> bool:
    return os.environ.get(TINY_ENV) == "1"


def public_paths(out: Path) -> tuple[Path, Path]:
    """(public data, pretrained model) directories of a demo writing to `out`."""
    return out / "public", out / "pretrain"


def _stored_corpus(data_dir: Path) -> str | None:
    try:
        stats = json.loads((data_dir / "stats.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return stats.get("corpus", {}).get("name") or stats.get("config", {}).get("corpus")


def _run_init(run_dir: Path) -> bool | None:
    """Whether the demo's run (if one was started) was warm-started, else None."""
    try:
        return read_json(run_dir / CONFIG).get("init") is not None
    except (FedKBError, OSError, ValueError):
        return None


def run_demo(out: Path, tiny: bool = False, corpus: str = "chitchat",
             warm_start: bool = False) -> Path:
    """Prepares, pretrains (with `warm_start`), trains, exports (each only if needed); returns
    the model directory."""
    from datasets.prepare import PrepareConfig, prepare
    from fl_pipeline.export import export_run
    from fl_pipeline.training import run
    from fl_pipeline.training.pretrain import pretrain

    data_dir, run_dir, model_dir = demo_paths(out)
    public_dir, pretrain_dir = public_paths(out)
    public = PUBLIC_TEXT[corpus] if warm_start else None
    if warm_start and public is None:
        raise FedKBError(f"--warm-start needs public text other than the phones': there is none "
                         f"for --corpus {corpus}; use --corpus chitchat")
    training = WARM_TRAINING if warm_start else DEMO_TRAINING[corpus]
    training, model = (TINY_TRAINING, TINY_MODEL) if tiny else (training, None)
    max_clients = TINY_MAX_CLIENTS if tiny else None
    stages = 5 if public else 3
    stage = iter(range(1, stages + 1))

    def say(text: str) -> None:
        print(f"{next(stage)}/{stages} {text}", flush=True)

    held = _stored_corpus(data_dir)
    if held is not None and held != corpus:
        raise FedKBError(f"{out} holds a demo on '{held}', not '{corpus}'; run "
                         f"`{fedkb_command('demo', '--corpus', held, '--out', out)}` to reuse it, "
                         "or give another --out")
    trained = _run_init(run_dir)
    if trained is not None and trained != bool(public):
        reuse = fedkb_command("demo", "--corpus", corpus, *(["--warm-start"] if trained else []),
                              "--out", out)
        raise FedKBError(f"{out} holds a demo {'with' if trained else 'without'} a warm start; "
                         f"run `{reuse}` to reuse it, or give another --out")
    if held is None:
        say(f"preparing the {corpus} corpus as the phones' federated clients")
        prepare(PrepareConfig(corpus=corpus, out=data_dir, max_clients=max_clients))
    else:
        say(f"using the phones' {corpus} clients in {data_dir}")
    init_from = None
    if public:
        if _stored_corpus(public_dir) is None:
            say(f"preparing public text for the server: the {public} corpus, which no phone holds")
            prepare(PrepareConfig(corpus=public, out=public_dir, max_clients=max_clients))
        else:
            say(f"using the public {public} text in {public_dir}")
        if (pretrain_dir / SUMMARY).exists():
            say(f"using the pretrained model in {pretrain_dir}")
        else:
            say(f"pretraining on the server on public {public} text")
            pretrain(public_dir, pretrain_dir, TINY_PRETRAIN if tiny else DEMO_PRETRAIN, model,
                     for_data=data_dir)
        init_from = pretrain_dir
    if (run_dir / SUMMARY).exists():
        say(f"using the finished run in {run_dir}")
    elif has_completed_round(run_dir):
        say(f"resuming the interrupted run in {run_dir}")
        run.resume(run_dir)
    else:
        say(f"federated training: {training.rounds} rounds of {training.clients_per_round} "
            "phones" + (f", from the model pretrained on public {public} text" if public else ""))
        run.train(data_dir, run_dir, training, model, init_from=init_from)
    if export_is_current(run_dir, model_dir):
        say(f"using the model in {model_dir}, exported from this run")
    else:
        say(f"exporting to TFLite in {model_dir}")
        export_run(run_dir, model_dir)
    return model_dir


def export_is_current(run_dir: Path, model_dir: Path) -> bool:
    """Whether `model_dir` is a complete, intact export of the finished run as it is now.

    True when the model directory passes the app's checks and its card records this run's
    summary, settings and final weights (by SHA-256) and the default quantization, so
    exporting again would write the same model: the demo then skips the export.
    """
    # The app's own checks (the server's export never imports the device package; the demo,
    # which ends by opening the app, may).
    from fl_pipeline.export import quantization_label, run_training_card
    from keyboard_app.model_dir import read_model_dir

    try:
        card = read_model_dir(model_dir).card
        training, _ = run_training_card(run_dir, read_json(run_dir / CONFIG),
                                        read_json(run_dir / SUMMARY))
    except (FedKBError, OSError, ValueError):
        return False
    return (card.get("training") == training
            and card["file"].get("quantization") == quantization_label(quantize=True))


def next_commands(out: Path) -> list[tuple[str, str]]:
    """(what, command) a user can run on the demo's output, spelled to run as printed."""
    data_dir, _, model_dir = demo_paths(out)
    default = out == DEMO_DIR  # the reading commands default to the demo's paths
    model = [] if default else ["--model", model_dir]
    return [("open the keyboard (needs a display)", fedkb_command("app", *model)),
            ("suggestions in the terminal", fedkb_command("predict", "see you ", *model)),
            ("what the demo's clients hold", fedkb_command("data", "stats",
                                                           *([] if default else [data_dir])))]
