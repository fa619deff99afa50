"""How big a bench run is: one dataclass, three presets.

`quick()` is what the README's results come from: the phones hold chitchat
(real typed chat) and the federated run is `make demo`'s, so the bench
judges the model the demo ships, at the demo's budget (issue 14 §3).
`full()` takes hours (more clients per round, more rounds, a DP sweep, 500
rounds of memory tracking); `tiny(corpus)` runs every measurement on a tiny
model and corpus in about a minute, for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fl_pipeline.cli.demo import CHITCHAT_TRAINING
from fl_pipeline.config import TrainConfig


@dataclass(frozen=True)
class BenchConfig:
    preset: str
    # `fedkb data prepare` arguments (besides --out): the corpus and its settings.
    prepare_args: tuple[str, ...] = ("--corpus", "chitchat")
    prepare_repetitions: int = 3
    # ModelConfig overrides; empty = the default size (vocabulary 10k, embedding 96, LSTM 256).
    model: dict = field(default_factory=dict)
    # The federated run that quality, learning curves, communication and the device model use:
    # `make demo`'s (150 rounds of 5 chitchat phones, at most 16 windows each, one epoch in
    # batches of 8).
    train: TrainConfig = dataclasses.replace(CHITCHAT_TRAINING, checkpoint_every=25)
    # Keyboard metrics (`fedkb eval --keyboard-users/--keyboard-messages`): a seeded sample of
    # held-out users (None: all), at most this many future messages each.
    keyboard_users: int | None = 30
    keyboard_messages: int = 20
    # The strategy table (issue 16): a --compress run, one DP run per noise multiplier and,
    # when shorter than the federated run, a plain run, each `short_rounds` rounds of the
    # federated run's settings, typed like the others. DP top-3 is also set against the
    # federated run's held-out evaluation at the same round (a multiple of eval_every).
    # tff.learning.dp_aggregator needs noise < 0.1 x clients per round: < 0.5 for the demo's 5.
    dp_noise_multipliers: tuple[float, ...] = (0.3,)
    short_rounds: int = 50
    # Seeds of the float32 and --compress short runs: with more than one, their strip top-3
    # ratio is reported as the median over seeds with its range, so that a 2% difference is
    # not mistaken for noise (issue 16); the table's rows are the first seed's.
    strategy_seeds: tuple[int, ...] = (0,)
    # Memorization audit (issue 8): canaries planted in the corpus, one run with
    # and one without DP for `audit_rounds` rounds each (0 = skipped, as in --quick).
    audit_rounds: int = 0
    audit_noise_multiplier: float = 1.0
    audit_canaries: int = 2  # canaries per repeat count
    audit_canary_repeats: tuple[int, ...] = (1, 4, 16)
    audit_canary_digits: int = 5  # secrets ranked among 10^digits candidates
    audit_prepare_args: tuple[str, ...] | None = None  # the canary corpus (None: prepare_args)
    # TFF round timing: rounds of `train` settings; the first `warmup_rounds` (tracing) are not timed.
    timing_rounds: int = 6
    warmup_rounds: int = 1
    # A separate 1-worker run that tracks resident memory (0 = use the timing rounds).
    memory_rounds: int = 0
    memory_window: tuple[int, int] = (50, 500)  # growth measured between these rounds
    # Device (exported model, LiteRT).
    suggest_contexts: int = 10_000
    train_steps: int = 200
    refresh_keystrokes: int = 3_000
    cold_starts: int = 3
    fine_tune_messages: int = 50
    fine_tune_repetitions: int = 3
    # Personalization (issue 15): the held-out users of this corpus (None: prepare_args') with
    # at least `personal_min_past` past messages (a seeded sample of `personal_max_users`; None:
    # all), at most `personal_max_messages` future ones each.
    personal_prepare_args: tuple[str, ...] | None = None
    personal_min_past: int = 20
    personal_max_users: int | None = 40
    personal_max_messages: int = 50
    seed: int = 0

    def __post_init__(self):
        if self.short_rounds % self.train.eval_every or self.short_rounds > self.train.rounds:
            raise ValueError(f"short_rounds ({self.short_rounds}) must be a multiple of train.eval_every "
                             f"({self.train.eval_every}) within train.rounds ({self.train.rounds}), "
                             "so the federated run has a held-out evaluation to compare with")
        if self.timing_rounds <= self.warmup_rounds:
            raise ValueError("timing_rounds must exceed warmup_rounds")
        if self.memory_rounds and self.memory_rounds < self.memory_window[1]:
            raise ValueError("memory_rounds must reach the end of memory_window")
        for noise in self.dp_noise_multipliers:  # fail now, not after an hour of training
            self.dp_train(noise)
        self.compress_train()
        if not self.strategy_seeds or self.strategy_seeds[0] != self.train.seed:
            raise ValueError("strategy_seeds must start with train.seed (the table's rows)")
        if self.audit_rounds:
            self.audit_train(self.audit_noise_multiplier)

    def _short_run(self, rounds: int, **changes) -> TrainConfig:
        """The federated run's settings for `rounds` rounds, evaluated and saved once at the end."""
        return dataclasses.replace(self.train, rounds=rounds, eval_every=rounds,
                                   checkpoint_every=rounds, **changes)

    def dp_train(self, noise_multiplier: float) -> TrainConfig:
        """A DP run: the federated run's settings, `short_rounds` rounds, evaluated at the end."""
        return self._short_run(self.short_rounds, dp_noise_multiplier=noise_multiplier)

    def audit_train(self, noise_multiplier: float | None) -> TrainConfig:
        """A run on the canary corpus: the federated run's settings, `audit_rounds` rounds."""
        return self._short_run(self.audit_rounds, dp_noise_multiplier=noise_multiplier)

    def compress_train(self, seed: int | None = None) -> TrainConfig:
        """A --compress run: the federated run's settings, `short_rounds` rounds."""
        return self._short_run(self.short_rounds, compress=True, seed=self._seed(seed))

    def plain_short_train(self, seed: int | None = None) -> TrainConfig | None:
        """The plain run the short runs are set against: None when the federated run itself
        is that run (same length, same seed)."""
        if self.short_rounds == self.train.rounds and self._seed(seed) == self.train.seed:
            return None
        return self._short_run(self.short_rounds, seed=self._seed(seed))

    def _seed(self, seed: int | None) -> int:
        return self.train.seed if seed is None else seed

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["train"] = self.train.to_json()
        return data

    @classmethod
    def quick(cls) -> "BenchConfig":
        """The defaults above: 15-35 minutes on 2 cores, by the machine (README, Results)."""
        return cls(preset="quick")

    @classmethod
    def full(cls) -> "BenchConfig":
        """Hours: larger cohorts, more rounds, a DP sweep and 500 rounds of memory tracking."""
        return cls(
            preset="full",
            prepare_repetitions=5,
            train=dataclasses.replace(CHITCHAT_TRAINING, rounds=300, clients_per_round=20,
                                      eval_clients=100_000, checkpoint_every=25),
            keyboard_users=None,
            keyboard_messages=50,
            # tff.learning.dp_aggregator needs noise < 0.1 x clients per round.
            dp_noise_multipliers=(0.3, 0.6, 1.2),
            short_rounds=100,
            strategy_seeds=(0, 1, 2),
            audit_rounds=100,
            # 250 clients, so that in 100 rounds of 20 each canary's client takes part in about 9
            # rounds (among all 3,371 it would be 0.6: nothing to memorize, nothing to measure).
            audit_prepare_args=("--corpus", "fortunes", "--max-clients", "250"),
            timing_rounds=21,
            memory_rounds=500,
            cold_starts=5,
            fine_tune_repetitions=5,
            personal_max_users=None,
        )

    @classmethod
    def tiny(cls, corpus: Path) -> "BenchConfig":
        """Every measurement on a tiny corpus and model, for tests (timings meaningless)."""
        return cls(
            preset="tiny",
            prepare_args=("--corpus", str(corpus), "--vocab-from-data", "--vocab-size", "64",
                          "--seq-len", "8", "--heldout-fraction", "0.25", "--seed", "1"),
            prepare_repetitions=1,
            model={"embedding_dim": 8, "lstm_units": 16},
            train=TrainConfig(rounds=2, clients_per_round=4, batch_size=8, eval_every=1,
                              checkpoint_every=1, client_lr=0.5, server_lr=0.05),
            keyboard_users=4,
            keyboard_messages=3,
            dp_noise_multipliers=(0.3,),
            short_rounds=1,
            strategy_seeds=(0, 1),
            audit_rounds=2,
            audit_noise_multiplier=0.3,
            audit_canaries=1,
            audit_canary_repeats=(1, 4),
            audit_canary_digits=2,
            # wordfreq's vocabulary holds the canary words, the tiny corpus's own does not
            audit_prepare_args=("--corpus", str(corpus), "--vocab-size", "5000", "--seq-len", "12",
                                "--heldout-fraction", "0.25", "--seed", "1"),
            timing_rounds=3,
            suggest_contexts=300,
            train_steps=20,
            refresh_keystrokes=200,
            cold_starts=1,
            fine_tune_repetitions=1,
            personal_min_past=1,
            personal_max_messages=3,
        )
