"""A small stand-in stage for runner tests: emits progress events, then ends as told.

python tests/support/fake_stage.py --steps 5 --sleep 0.1 [--fail | --crash] [--stubborn] [--output X]
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from core.events import EventWriter  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--sleep", type=float, default=0.05)
parser.add_argument("--fail", action="store_true", help="end with an error event and exit 1")
parser.add_argument("--crash", action="store_true", help="exit 1 without a final event")
parser.add_argument("--stubborn", action="store_true", help="ignore SIGINT and SIGTERM")
parser.add_argument("--output")
args = parser.parse_args()

events = EventWriter.from_env("fake")
if args.stubborn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
events.emit("start", pid=os.getpid())
try:
    for step in range(1, args.steps + 1):
        time.sleep(args.sleep)
        events.progress(step, args.steps, "steps")
        print(f"step {step}", flush=True)
except KeyboardInterrupt:
    events.done("cancelled")
    sys.exit(130)
if args.crash:
    sys.exit(1)
if args.fail:
    events.error("fake failure: the input is wrong", hint="fix the input")
    sys.exit(1)
events.artifact(args.output or "/tmp/fake-output", "adapter")
events.done()
