"""Nipype interfaces: thin wrappers; the science lives in model/, lesions/ and transforms."""
