"""Nipype workflow builders (init_*_wf), one concern per module."""
