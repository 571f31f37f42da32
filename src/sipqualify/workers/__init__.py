"""`run --workers N`: static peers qualified by N worker processes (README "Workers",
docs/architecture.md). `hrw` partitions, `worker` is one worker process, `pool` supervises them
from the main process, `mirror` is the main process's engine that forwards to them."""

DEFAULT_WORKERS = 1  # `run --workers` when not given: 1 is the in-process path, no worker at all
