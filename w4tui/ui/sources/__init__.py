"""Plain, Textual-free models behind the panes: run snapshots, training state, system samples, artifacts.

Everything here is called from thread workers; nothing here touches a widget.
"""
