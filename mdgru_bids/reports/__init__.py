"""HTML reports: one per participant (``sub-X.html``) and one for the study (``group.html``)."""
