"""The correction-loop section of ``docs/benchmarks.md`` (``study_correction_loop.py``): Dice after each
round of corrections per arm, the training time per round, and the active-learning comparison."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report_study import mean_sd, save_dice_plot  # noqa: E402

ARM_LABEL = {
    "worst": "worst slices (most wrong pixels: the user fixes what is most wrong)",
    "uncertain": "most uncertain slices (SAM auto's *Next uncertain slice*)",
    "random": "random slices (control)",
}


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model's row with its seed (files of one seed name it once, at the top)."""
    return [{"seed": data.get("seed", 0), **row} for row in data["rounds"]]


def correction_loop_section(data: dict[str, Any], images: Path, link: str, machine_line: Any) -> list[str]:
    rows = _rows(data)
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    arms = [a for a in ARM_LABEL if any(r["arm"] == a for r in rows)]

    def cell(arm: str, r: int) -> list[dict[str, Any]]:
        return [x for x in rows if x["round"] == r and (x["arm"] == arm or r == 0)]

    def test_dice(members: list[dict[str, Any]]) -> list[float]:
        return [d for m in members for d in m["test_dice"].values()]

    tests = data["test_cases"]
    lines = [
        "## The correction loop",
        "",
        f"`benchmarks/study_correction_loop.py` on `la_heart_dev`, simulated: round 0 trains LiteMedSAM's decoder "
        f"(`decoder_refine`) on {data['painted_slices']} painted slices of one volume; in each round *r* the round "
        f"*r*−1 model segments a new pool volume automatically, {data['slices_per_round']} of its slices are "
        "corrected (replaced by the reference, or marked *structure absent* where the reference is empty), and the "
        f"model is retrained from its own weights (warm start, {data['retrain_steps']} steps) on everything labelled "
        f"so far — what *Add to training data* and *Retrain* in SAM auto do. Scored after each round on {len(tests)} "
        "held-out volumes never trained on or corrected, automatic mode, each model's own defaults; nothing was "
        f"chosen on them. Seeds: {', '.join(str(s) for s in seeds)} (seed *s* corrects pool volumes 4*s*+1…4*s*+3). "
        f"Machine: {machine_line(data['machine'])}. Dice: mean ± sd over held-out volumes × seeds. Training time: "
        "the fit itself (median over arms and seeds); every volume's embeddings came from the embedding store, as they "
        "do once a volume was segmented — encoding a new 88-slice volume the first time adds about 88 × 0.75–1.2 s "
        "(see the prediction-speed section).",
        "",
        "| round | labelled slices | " + " | ".join(f"corrected: {a}" for a in arms) + " | training time |",
        "|---|---|" + "---|" * len(arms) + "---|",
    ]
    for r in rounds:
        members = [x for x in rows if x["round"] == r]
        dices = [mean_sd(test_dice(cell(a, r))) for a in arms]  # round 0: the same model for every arm
        time_s = statistics.median(m["fit_seconds"] for m in members)
        lines.append(f"| {r} | {members[0]['labelled_slices']} | " + " | ".join(dices) + f" | {time_s:.0f} s |")
    lines += [
        "",
        f"![Correction loop]({link}/correction_loop.png)",
        "",
        "**Which slices to correct** (active learning): the gain on the held-out volumes after the last round, the "
        "Dice the model had on the volume it was about to be corrected on, and how wrong the chosen slices were "
        "(their Dice before correction; an empty slice predicted empty counts 1).",
        "",
        "| slices corrected | Dice gain, round 0 → last | Dice on the next volume before correcting | "
        "chosen slices' Dice before correction |",
        "|---|---|---|---|",
    ]
    last = rounds[-1]
    summary: dict[str, float] = {}
    for arm in arms:
        gains = []
        for seed in seeds:
            start = test_dice([x for x in rows if x["round"] == 0 and x["seed"] == seed])
            end = test_dice([x for x in rows if x["round"] == last and x["arm"] == arm and x["seed"] == seed])
            if start and end:
                gains.append(statistics.mean(end) - statistics.mean(start))
        corrected = [x for x in rows if x["arm"] == arm and x["round"] > 0]
        before = [d for x in corrected for d in x["corrected_slices_dice_before"]]
        volume = [x["volume_dice_before"] for x in corrected]
        gain = f"{statistics.mean(gains):+.3f}" if gains else "–"
        lines.append(f"| {ARM_LABEL[arm]} | {gain} | {mean_sd(volume)} | {mean_sd(before)} |")
        summary[arm] = statistics.mean(gains) if gains else float("nan")
    lines += ["", _reading(summary, rows), ""]
    _plot(rows, arms, rounds, images / "correction_loop.png", test_dice)
    return lines


def _reading(gains: dict[str, float], rows: list[dict[str, Any]]) -> str:
    """What the tables say, from the figures themselves (the file is regenerated, so no hand-written numbers)."""
    ranked = sorted(gains, key=lambda a: -gains[a])
    low = min(rows, key=lambda x: statistics.mean(x["test_dice"].values()))
    low_dice = statistics.mean(low["test_dice"].values())
    seeds = len({r["seed"] for r in rows})
    return (
        f"Read it as: correcting {ARM_LABEL[ranked[0]].split(' (')[0]} gained most ({gains[ranked[0]]:+.3f}), "
        f"{ARM_LABEL[ranked[-1]].split(' (')[0]} least ({gains[ranked[-1]]:+.3f}). Retraining on a few corrected "
        f"slices is fragile: the worst single model (seed {low['seed']}, {low['arm']}, round {low['round']}) fell to "
        f"{low_dice:.3f} Dice on the held-out volumes, and each cell holds only {seeds} seeds × "
        f"{len(rows[0]['test_dice'])} volumes, so small differences are noise. "
        "The most uncertain slices are the wrongest ones (lowest Dice before correction), yet a model retrained on "
        "them generalised worse; *Next uncertain slice* is a way "
        "to find errors, not a recommendation of what to retrain on."
    )


def _plot(rows: list[dict[str, Any]], arms: list[str], rounds: list[int], path: Path, test_dice: Any) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for arm, style in zip(arms, ("-", "--", ":")):
        points = []
        for r in rounds:
            values = test_dice([x for x in rows if x["round"] == r and (x["arm"] == arm or r == 0)])
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                points.append((r, statistics.mean(values), sd))
        xs, ys, sds = zip(*points)
        ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, linestyle=style, label=ARM_LABEL[arm].replace("*", ""))
    ax.set_xticks(rounds)
    save_dice_plot(fig, ax, path, "rounds of corrections (one new volume each)",
                   "Correct, retrain, repeat: LiteMedSAM on la_heart_dev, CPU")  # fmt: skip


__all__ = ["correction_loop_section"]
