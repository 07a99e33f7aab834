"""The evening loop: the build ledger, the night's chain, the scheduler that starts it, and their CLI."""
