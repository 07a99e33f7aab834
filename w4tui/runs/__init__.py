"""The run machinery: stage specs, the runner and its per-run supervisor, following runs, the pipeline."""
