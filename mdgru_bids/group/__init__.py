"""The group level: study tables, the template-space lesion frequency map and plots, all made
from the participants' published derivatives."""
