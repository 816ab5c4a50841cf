"""Linear transforms chained and inverted without ANTs (:mod:`mdgru_bids.transforms`)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _ChainLinearInputSpec(BaseInterfaceInputSpec):
    in_transforms = InputMultiObject(
        File(exists=True),
        mandatory=True,
        desc="linear transforms (moving → fixed, ITK files) in the order points pass them",
    )
    invert = InputMultiObject(traits.Bool, desc="per transform: pass it backwards")


class _ChainLinearOutputSpec(TraitedSpec):
    out_transform = File(exists=True, desc="the whole chain as one transform, ITK text")


class ChainLinear(SimpleInterface):
    """One linear transform from a chain of them, e.g. subject space → session → template from
    the session's registrations, so a registration can start where earlier ones ended."""

    input_spec = _ChainLinearInputSpec
    output_spec = _ChainLinearOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from mdgru_bids.transforms import read_linear, write_linear

        paths = list(self.inputs.in_transforms)
        invert = list(self.inputs.invert) if isdefined(self.inputs.invert) else [False] * len(paths)
        if len(invert) != len(paths):
            raise ValueError(f"{len(paths)} transforms but {len(invert)} invert flags")
        chain = np.eye(4)
        for path, backwards in zip(paths, invert, strict=True):
            step = read_linear(path)
            chain = (np.linalg.inv(step) if backwards else step) @ chain
        out = os.path.join(runtime.cwd, "chained.txt")
        self._results["out_transform"] = str(write_linear(chain, out))
        return runtime
