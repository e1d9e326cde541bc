#!/usr/bin/env python3
"""Generate one-step parity vectors for the firmware's Pendulum and CartPole models.

For each environment this draws random (state, action) pairs spread over the interesting
range (including out-of-range actions for Pendulum-v1 and terminating states for
CartPole-v1), puts the unwrapped environment in that state, steps it once and records
the next observation, the reward and the termination flag. The Rust test
`firmware/tests/plant_parity.rs` replays them without Python.

States and actions are rounded to float32 before they are set, so that the f32 model and
gymnasium start from exactly the same numbers. CartPole pairs whose next state lands
within 1e-5 of a termination threshold are redrawn: there the f32 and f64 computations may
legitimately disagree about which side of the line they are on.

Usage (from the repository root):
    pip install "gymnasium==1.4.*"
    python scripts/gen_gym_vectors.py            # writes firmware/tests/data/*.json
"""

import argparse
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np

OUT_DIR = Path(__file__).resolve().parent.parent / "firmware" / "tests" / "data"


def f32(x):
    """Round to the nearest float32 and return a Python float."""
    return float(np.float32(x))


def short(x):
    """JSON number text: the shortest repr that round-trips through float32."""
    return float(str(np.float32(x)))


def pendulum_vectors(n, rng):
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    rows = []
    for i in range(n):
        if i % 10 == 0:  # a few far-wound angles: the state is not wrapped
            theta = rng.uniform(-20.0, 20.0)
        else:
            theta = rng.uniform(-2 * math.pi, 2 * math.pi)
        theta_dot = rng.uniform(-10.0, 10.0)  # beyond +-8: exercises the speed clip
        action = rng.uniform(-3.0, 3.0)  # beyond +-2: exercises the torque clip
        state = [f32(theta), f32(theta_dot)]
        env.reset()
        env.state = np.array(state, dtype=np.float64)
        obs, reward, terminated, truncated, _ = env.step(np.array([action], dtype=np.float32))
        assert not truncated
        rows.append(
            {
                "state": [short(v) for v in state],
                "action": short(action),
                "next_obs": [short(v) for v in obs],
                "reward": float(reward),
                "terminated": bool(terminated),
            }
        )
    return rows


def cartpole_vectors(n, rng):
    env = gym.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    x_lim, th_lim = env.x_threshold, env.theta_threshold_radians
    rows, redrawn = [], 0
    while len(rows) < n:
        state = [
            f32(rng.uniform(-2.6, 2.6)),
            f32(rng.uniform(-3.0, 3.0)),
            f32(rng.uniform(-0.26, 0.26)),
            f32(rng.uniform(-3.5, 3.5)),
        ]
        action = int(rng.integers(0, 2))
        env.reset()  # fresh episode: the terminating step earns its reward
        env.state = np.array(state, dtype=np.float64)
        obs, reward, terminated, truncated, _ = env.step(action)
        assert not truncated
        x, _, th, _ = env.state
        if min(abs(abs(x) - x_lim), abs(abs(th) - th_lim)) < 1e-5:
            redrawn += 1
            continue
        rows.append(
            {
                "state": [short(v) for v in state],
                "action": action,
                "next_obs": [short(v) for v in obs],
                "reward": float(reward),
                "terminated": bool(terminated),
            }
        )
    return rows, redrawn


def write(name, env_id, rows, seed):
    doc = {
        "env": env_id,
        "gymnasium": gym.__version__,
        "seed": seed,
        "rows": rows,
    }
    path = OUT_DIR / name
    with open(path, "w") as f:
        # One row per line: small diffs, easy to read.
        f.write("{\n")
        for key in ("env", "gymnasium", "seed"):
            f.write(f"  {json.dumps(key)}: {json.dumps(doc[key])},\n")
        f.write('  "rows": [\n')
        f.write(",\n".join("    " + json.dumps(r, separators=(",", ":")) for r in rows))
        f.write("\n  ]\n}\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200, help="pairs per environment")
    ap.add_argument("--seed", type=int, default=20261129, help="sampling seed")
    args = ap.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    rows = pendulum_vectors(args.n, rng)
    p = write("pendulum_v1.json", "Pendulum-v1", rows, args.seed)
    print(f"{p}: {len(rows)} pairs")

    rows, redrawn = cartpole_vectors(args.n, rng)
    p = write("cartpole_v1.json", "CartPole-v1", rows, args.seed)
    done = sum(r["terminated"] for r in rows)
    print(f"{p}: {len(rows)} pairs, {done} terminating, {redrawn} redrawn near a threshold")


if __name__ == "__main__":
    main()
