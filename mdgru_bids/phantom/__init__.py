"""Synthetic longitudinal MS datasets in BIDS, with known lesion truth.

``make_dataset(out_dir, participants=2, sessions=2, seed=0, resolution=3.0)`` writes one;
the command line is ``mdgru-bids-phantom``.
"""

from mdgru_bids.phantom.dataset import make_dataset

__all__ = ["make_dataset"]
