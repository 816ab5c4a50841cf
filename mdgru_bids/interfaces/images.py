"""Small image utilities as Nipype interfaces."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
)


class _MeanImageInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(File(exists=True), mandatory=True, desc="images on one grid")


class _MeanImageOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class MeanImage(SimpleInterface):
    """Voxel-wise mean of images on one grid: the subject's template-registration target,
    so that no session is favoured."""

    input_spec = _MeanImageInputSpec
    output_spec = _MeanImageOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from mdgru_bids.nifti import load_array, same_grid, save_like, work_name

        first, img = load_array(self.inputs.in_files[0])
        total = first.astype(np.float64)
        for path in self.inputs.in_files[1:]:
            data, other = load_array(path)
            if not same_grid(other, img):
                raise ValueError(f"{path} is not on the grid of {self.inputs.in_files[0]}")
            total += data
        out = os.path.join(runtime.cwd, work_name("mean"))
        self._results["out_file"] = str(save_like(total / len(self.inputs.in_files), img, out))
        return runtime
