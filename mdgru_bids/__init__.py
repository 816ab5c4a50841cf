"""mdgru-bids: longitudinal MS lesion segmentation with Multi-Dimensional Gated Recurrent Units."""

__version__ = "0.1.0"
