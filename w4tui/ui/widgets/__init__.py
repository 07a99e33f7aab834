"""Widgets the panes share: the pane base, charts, status lines and the ticker."""
