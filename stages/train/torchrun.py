"""PyTorch's own launcher, ``python -m torch.distributed.run``, with Ctrl-C ignored: the training's
launcher (launch.py) takes a cancel and passes it to every rank itself. Ignoring it here, in the child,
lets the launcher keep its own handler the whole time, so a Ctrl-C while torchrun starts is not lost."""

import runpy
import signal

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the ranks inherit it until they install their own
    runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
