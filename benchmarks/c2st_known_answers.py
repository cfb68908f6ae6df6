"""C2ST's known answers and cost: the built samplers of tests/test_c2st.py at full size.

``python benchmarks/c2st_known_answers.py [--mixtures ring8 default_s0 d20] [--n 10000]
[--seeds 0 1]`` prints, per mixture and built sampler (a perfect one, one mode dropped, half
the modes, every mode 3x too wide in std, one Gaussian over the data), the C2ST accuracy of
``n`` sampler points against ``n`` truth points (``--with-floor``: and its floor, a second
truth draw, as the evaluation computes them with ``c2st_with_floor``), the optimiser steps
trained and the seconds taken (wall and CPU) on ``--threads`` torch threads (default 1, as in
the evaluation). The
numbers are those of docs/metrics.md "C2ST".
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gmm_vae.analysis.c2st import C2STSettings, c2st, c2st_with_floor
from gmm_vae.data.gmm import GMM
from gmm_vae.data.suite import grid, ring


def mixture(name: str) -> GMM:
    """A named test mixture: the suite's ring and grid, or a default-style random one."""
    if name == "ring8":
        return ring()
    if name == "grid25":
        return grid()
    if name == "default_s0":
        return GMM.random(4, 3, seed=0, mean_spread=4.0, scale_range=(0.4, 1.0),
                          weight_concentration=5.0, min_separation=2.0)
    if name == "d20":
        return GMM.random(4, 20, seed=0, mean_spread=4.0, scale_range=(0.4, 1.0),
                          weight_concentration=5.0, min_separation=2.0)
    raise SystemExit(f"unknown mixture {name!r}")


def broken_samplers(gmm: GMM, seed: int = 5) -> dict[str, GMM]:
    """The truth and the failures C2ST must see, each as a mixture to sample."""
    keep = np.arange(1, gmm.n_components)
    half = np.arange(0, gmm.n_components, 2)
    pts = gmm.sample(200_000, np.random.default_rng(seed))[0]

    def subset(idx: np.ndarray) -> GMM:
        return GMM(gmm.means[idx], gmm.covariances[idx], gmm.weights[idx] / gmm.weights[idx].sum())

    return {"perfect": gmm, "drop_one": subset(keep), "half": subset(half),
            "wide3": GMM(gmm.means, gmm.covariances * 9.0, gmm.weights),  # 3x the std
            "one_gaussian": GMM(pts.mean(0)[None], np.cov(pts.T)[None], np.ones(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixtures", nargs="+", default=["ring8", "grid25", "default_s0"])
    parser.add_argument("--samplers", nargs="+", default=None)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=C2STSettings.threads)
    parser.add_argument("--with-floor", action="store_true",
                        help="time the evaluation's c2st_with_floor (the pair and its floor)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="C2STSettings fields to change, e.g. batch_size=256")
    args = parser.parse_args()
    changes = {k: type(getattr(C2STSettings, k))(v) if getattr(C2STSettings, k) is not None
               else int(v) for k, v in (item.split("=") for item in args.set)}
    settings = C2STSettings(threads=args.threads, **changes)
    print(f"settings: {settings}")
    for name in args.mixtures:
        gmm = mixture(name)
        for sampler, model in broken_samplers(gmm).items():
            if args.samplers and sampler not in args.samplers:
                continue
            for seed in args.seeds:
                rng = np.random.default_rng([seed, 1])
                model_pts = model.sample(args.n, rng)[0]
                truth, truth2 = gmm.sample(args.n, rng)[0], gmm.sample(args.n, rng)[0]
                t0, c0 = time.perf_counter(), time.process_time()
                if args.with_floor:
                    res = c2st_with_floor(model_pts, truth, truth2, seed=seed, settings=settings)
                    floor = f"floor {res['floor']:.3f}; "
                else:
                    res, floor = c2st(model_pts, truth, seed=seed, settings=settings), ""
                print(f"{name:10} {sampler:12} seed {seed}: C2ST {res['accuracy']:.3f} "
                      f"({floor}{res['steps']} steps, {time.perf_counter() - t0:.1f} s wall, "
                      f"{time.process_time() - c0:.1f} s CPU)", flush=True)


if __name__ == "__main__":
    main()
