"""Widgets, grouped by the pane they belong to; ``chart`` and ``pane`` are shared."""
