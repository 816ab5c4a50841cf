"""Synthetic training data: MS-lesion images generated on the fly from label maps.

Domain randomisation in the manner of SynthSeg (Billot et al. 2023): every training patch is
drawn from a label map (template or real anatomy) with random lesions, random deformation,
random per-label intensities, bias field, gamma, resolution, slice profile and noise, so the
network cannot rely on one scanner's contrast, one resolution or one anatomy. Real images
enter the mix too, heavily augmented and with lesions carved from other images pasted in.
"""
