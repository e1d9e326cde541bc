"""Prints every scalar that TensorBoard's own reader finds in one event folder.

Usage: dump_scalars.py LOGDIR

Output: one JSON object {tag: [[step, value], ...]}, in the order the reader returns them,
with null for NaN. Reading goes through EventAccumulator, the loader behind
`tensorboard --logdir`, so what it returns is what the dashboard draws.
"""

import json
import math
import sys

from tensorboard.backend.event_processing import event_accumulator


def main(logdir):
    accumulator = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.SCALARS: 0}  # 0: keep every event
    )
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()[event_accumulator.SCALARS]:
        scalars[tag] = [
            [event.step, None if math.isnan(event.value) else event.value]
            for event in accumulator.Scalars(tag)
        ]
    json.dump(scalars, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
