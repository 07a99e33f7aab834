"""Pipeline stages, each runnable as ``python -m stages.<name>``. Never imports Textual or w4tui.ui."""
