"""Group figures: lesion-volume trajectories, distributions and the lesion frequency map."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pandas as pd
from matplotlib.figure import Figure
from nilearn import plotting

from mdgru_bids.reports.figures import cuts, save_figure
from mdgru_bids.templates import Template

MAX_LEGEND = 12  # participants named in a legend; beyond that it hides the data


def trajectories(lesions: pd.DataFrame, path: Path) -> Path:
    """Total lesion volume per session, one line per participant (years since their first
    session where every session has an acquisition time, else the session's position)."""
    figure = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax = figure.subplots()
    times = pd.to_datetime(lesions["acq_time"], errors="coerce")
    dated = bool(times.notna().all())
    for participant, rows in lesions.groupby("participant_id", sort=True):
        if dated:
            when = times[rows.index]
            x = (when - when.min()) / pd.Timedelta(days=365.25)
        else:
            x = pd.Series(range(1, len(rows) + 1), index=rows.index)
        ax.plot(x, rows["total_volume_ml"], marker="o", label=participant)
    ax.set_xlabel("years since the first session" if dated else "session")
    ax.set_ylabel("total lesion volume (mL)")
    ax.grid(alpha=0.3)
    if lesions["participant_id"].nunique() <= MAX_LEGEND:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(figure, path)


def distributions(lesions: pd.DataFrame, changes: pd.DataFrame, path: Path) -> Path:
    """Histograms of lesion volume and count (latest session of each participant) and of new
    lesions per year (every pair of consecutive sessions)."""
    latest = lesions.groupby("participant_id", sort=False).tail(1)
    panels = [
        (latest["total_volume_ml"], "total lesion volume (mL), latest session"),
        (latest["lesion_count"], "lesions, latest session"),
        (changes["new_per_year"].dropna(), "new lesions per year"),
    ]
    figure = Figure(figsize=(12.0, 3.6), layout="constrained")
    for ax, (values, label) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        if values.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        else:
            values.plot.hist(ax=ax, bins=min(20, max(5, len(values))), color="#1f3b57")
        ax.set_xlabel(label)
        ax.set_ylabel("count")
    return save_figure(figure, path)


def frequency_map(frequency: nib.Nifti1Image, template: Template | None, path: Path) -> Path:
    """The lesion frequency on axial slices through the template's brain (on its own where
    the template is missing)."""
    figure = Figure(figsize=(12.0, 3.0), facecolor="black")
    bg, slices = None, 8
    if template is not None:
        bg, slices = str(template.t1w), cuts(nib.load(template.brain_mask))["z"]
    plotting.plot_stat_map(
        frequency, bg_img=bg, display_mode="z", cut_coords=slices, figure=figure, cmap="hot",
        threshold=1e-3, vmin=0.0, vmax=1.0, black_bg=True, colorbar=True, symmetric_cbar=False,
    )  # fmt: skip
    return save_figure(figure, path)
