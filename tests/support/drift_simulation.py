"""How often would ``batch.drift`` flag nights that did not drift? A reproducible simulation.

``python tests/support/drift_simulation.py [--nights-per-cell 2000] [--seed 16]`` draws nights
from one population of real predictions and runs them through :func:`batch.drift.compare_counts`
exactly as the job does, then prints the share of flagged nights per night size, baseline length
and candidate ``alpha`` (with ``psi_min`` fixed at the conventional 0.1), and the ``alpha`` it
chooses: the largest candidate whose flag rate stays at or below 1 % in every cell, with two
standard errors of Monte Carlo margin. tests/test_batch_drift.py runs a smaller copy with the
committed thresholds.

The population is the release model (models/fashion/1) on the data set's 372 test photos, run
through the nightly job at the default ``--min-confidence 0.5`` (measured 2026-12-02): the
joint counts of (filed folder, confidence bin of ``batch.drift.CONFIDENCE_EDGES``). A night of n
photos is a multinomial draw of n photos from that table, so category mix and confidence keep
their real dependence (``_uncertain`` photos are the ones below 0.5). The same is measured for
the validation split, to show what a real difference of mix does (test vs validation: PSI about
0.25 on the labels).

What it does not model: nights that differ for ordinary reasons (weekdays, sales) beyond
sampling. Real nights are more alike than different photo sets, but if they vary more than
multinomial draws, the real flag rate is higher than simulated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batch import drift  # noqa: E402

# (filed folder) -> counts per confidence bin, release model v1 on the 372 test photos.
TEST_SPLIT = {
    "_uncertain": [37, 0, 0, 0, 0, 0, 0, 0],
    "dress": [0, 1, 1, 1, 3, 4, 1, 3],
    "hat": [0, 0, 1, 4, 1, 1, 2, 0],
    "longsleeve": [0, 5, 12, 10, 3, 9, 16, 10],
    "outwear": [0, 4, 3, 3, 5, 3, 8, 2],
    "pants": [0, 1, 2, 3, 4, 7, 22, 4],
    "shirt": [0, 2, 3, 6, 4, 2, 3, 1],
    "shoes": [0, 0, 2, 5, 7, 15, 21, 22],
    "shorts": [0, 0, 3, 4, 5, 4, 7, 3],
    "skirt": [0, 1, 1, 0, 3, 0, 3, 0],
    "t-shirt": [0, 3, 7, 6, 3, 6, 9, 15],
}
# The same for the 341 validation photos.
VALIDATION_SPLIT = {
    "_uncertain": [42, 0, 0, 0, 0, 0, 0, 0],
    "dress": [0, 0, 4, 6, 1, 2, 6, 3],
    "hat": [0, 2, 2, 1, 3, 1, 1, 2],
    "longsleeve": [0, 4, 4, 11, 1, 8, 6, 8],
    "outwear": [0, 3, 4, 6, 3, 2, 3, 2],
    "pants": [0, 0, 0, 3, 3, 10, 18, 8],
    "shirt": [0, 3, 2, 4, 3, 5, 5, 1],
    "shoes": [0, 0, 0, 2, 2, 5, 12, 4],
    "shorts": [0, 5, 0, 4, 1, 8, 4, 4],
    "skirt": [0, 0, 0, 3, 1, 1, 1, 1],
    "t-shirt": [0, 5, 4, 1, 9, 9, 20, 29],
}
CELLS = sorted(TEST_SPLIT)
NIGHT_SIZES = (20, 40, 100, 372, 1000)
BASELINE_NIGHTS = (2, 14)
ALPHAS = (0.01, 0.005, 0.002, 0.001)
PSI_MIN = 0.1
TARGET = 0.01


def _joint(table: dict[str, list[int]]) -> np.ndarray:
    """Shares of the (folder, bin) cells, shape ``(len(CELLS) * 8,)``."""
    counts = np.array([table.get(c, [0] * 8) for c in CELLS], dtype=np.float64).ravel()
    return counts / counts.sum()


def _marginals(draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = draw.reshape(len(CELLS), 8)
    return grid.sum(axis=1), grid.sum(axis=0)


def _scores(rng, tonight_p, base_p, n, nights, reps):
    """PSI and p-value per aspect for ``reps`` simulated nights: arrays of shape (reps, 2)."""
    psis, ps = np.empty((reps, 2)), np.empty((reps, 2))
    for i in range(reps):
        mix_t, conf_t = _marginals(rng.multinomial(n, tonight_p))
        mix_b, conf_b = _marginals(rng.multinomial(n * nights, base_p))
        for j, (a, e) in enumerate(((mix_t, mix_b), (conf_t, conf_b))):
            psis[i, j] = drift.psi(a, e)
            ps[i, j] = drift.homogeneity_p(a, e)
    return psis, ps


def flag_rate(psis: np.ndarray, ps: np.ndarray, alpha: float, psi_min: float = PSI_MIN) -> float:
    """Share of nights flagged on either aspect."""
    flagged = ((ps < alpha) & (psis >= psi_min)).any(axis=1)
    return float(flagged.mean())


def simulate(
    reps: int = 2000,
    seed: int = 16,
    sizes: tuple[int, ...] = NIGHT_SIZES,
    baselines: tuple[int, ...] = BASELINE_NIGHTS,
    alphas: tuple[float, ...] = ALPHAS,
) -> dict:
    """Runs the simulation.

    Args:
        reps: simulated nights per (night size, baseline nights) cell.
        seed: NumPy generator seed (same seed, same figures).
        sizes: photos per night.
        baselines: trailing nights in the baseline (each of the same size).
        alphas: candidate p-value thresholds.

    Returns:
        ``{"same_mix": [{n, nights, rates: {alpha: rate}, psi_p99: [mix, conf]}],
        "chosen_alpha", "power": {...}}``.
    """
    rng = np.random.default_rng(seed)
    test_p, val_p = _joint(TEST_SPLIT), _joint(VALIDATION_SPLIT)
    same_mix = []
    for n in sizes:
        for nights in baselines:
            psis, ps = _scores(rng, test_p, test_p, n, nights, reps)
            same_mix.append(
                {
                    "n": n,
                    "nights": nights,
                    "rates": {str(a): flag_rate(psis, ps, a) for a in alphas},
                    "psi_p99": np.percentile(psis, 99, axis=0).round(3).tolist(),
                }
            )
    margin = 2 * np.sqrt(TARGET * (1 - TARGET) / reps)
    ok = [a for a in alphas if all(c["rates"][str(a)] + margin <= TARGET + 1e-12 for c in same_mix)]
    chosen = max(ok) if ok else min(alphas)
    shoes = {c: (TEST_SPLIT[c] if c == "shoes" else [0] * 8) for c in CELLS}
    power = {}
    for name, p, n in (
        ("shoes_only_20_photos", _joint(shoes), 20),
        ("validation_mix_100_photos", val_p, 100),
        ("validation_mix_372_photos", val_p, 372),
    ):
        psis, ps = _scores(rng, p, test_p, n, 2, max(reps // 4, 50))
        power[name] = flag_rate(psis, ps, chosen)
    return {
        "reps": reps,
        "seed": seed,
        "psi_min": PSI_MIN,
        "same_mix": same_mix,
        "chosen_alpha": chosen,
        "power_at_chosen_alpha_2_night_baseline": power,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights-per-cell", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    result = simulate(args.nights_per_cell, args.seed)
    print(f"{'photos':>6} {'nights':>6} " + " ".join(f"a={a:<6}" for a in ALPHAS) + "  PSI p99")
    for c in result["same_mix"]:
        rates = " ".join(f"{100 * c['rates'][str(a)]:7.2f}%" for a in ALPHAS)
        print(f"{c['n']:>6} {c['nights']:>6} {rates}  {c['psi_p99']}")
    print(json.dumps({k: result[k] for k in ("chosen_alpha", "psi_min")}))
    print(json.dumps(result["power_at_chosen_alpha_2_night_baseline"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
