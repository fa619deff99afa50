"""Server-side federated training: the TFF learning process (`learning_process`), the
clients' data and who takes part (`client_data`, `participation`), the `tff.program` loop
(`program`) with its crash-safe outputs (`releases`, `checkpoints`), the TFF workers
(`runtime`), and the run's start, resume and summary (`run`); `pretrain` is the server's
central warm start on public text."""
