"""What every stage program shares: the error contract (``errors``) and the main/argparse/event glue (``stage``)."""
