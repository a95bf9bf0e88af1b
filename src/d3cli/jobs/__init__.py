"""What each command does, as one call: a request (the command's options, filled by the
CLI) checked before any work, then run. `decode`, `trajectories`, `distill` and `aup` hold
the orchestration; the algorithms live in the library packages they call."""
