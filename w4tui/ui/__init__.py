"""The Textual control center. Only ``w4tui.ui.app.run_tui`` is meant to be called from outside.

Nothing under ``w4tui.ui`` imports torch, transformers or peft (tests/test_import_hygiene.py checks it),
and ``w4tui.ui.sources`` imports no Textual either: it holds the plain models the panes display.
"""
