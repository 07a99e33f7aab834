"""A stand-in train stage for the TUI tests and bench: emits realistic metrics events at a fixed rate.

python tests/support/fake_train.py --steps 50 --rate 10 [--fail]
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from core.events import EventWriter  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--rate", type=float, default=10.0, help="events per second")
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()

events = EventWriter.from_env("train")
events.emit("start", pid=os.getpid())
events.log("tokenizing 240 samples")
try:
    for step in range(1, args.steps + 1):
        time.sleep(1 / args.rate)
        events.metrics(
            step=step,
            total_steps=args.steps,
            epoch=round(step / args.steps, 4),
            loss=round(2.0 * math.exp(-step / 30) + 0.5, 6),
            learning_rate=2e-4,
            grad_norm=0.9,
            tokens_per_second=800.0,
            eta_s=(args.steps - step) / args.rate,
            device="mps",
            mem_allocated=int(9e9),
            mem_driver=int(11e9),
            mem_recommended_max=int(21e9),
        )
        print(f"step {step}/{args.steps}", flush=True)
except KeyboardInterrupt:
    events.done("cancelled")
    sys.exit(130)
if args.fail:
    events.error("fake training failure", hint="look at the log")
    sys.exit(1)
events.done(steps=args.steps)
