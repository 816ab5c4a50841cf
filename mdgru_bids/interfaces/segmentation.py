"""Nipype interface running the MD-GRU model on one session."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mdgru_bids.model.compute import PRECISIONS


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(
        File(exists=True), mandatory=True, desc="images on one grid, in the model's input order"
    )
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    model = File(exists=True, mandatory=True, desc="mdgru-bids model file (.safetensors)")
    device = traits.Str("cpu", usedefault=True, desc="torch device: cpu, cuda, cuda:1 ...")
    precision = traits.Enum(*PRECISIONS, usedefault=True)
    tta = traits.Bool(False, usedefault=True, desc="average over the mirror images")
    num_threads = traits.Int(1, usedefault=True, desc="CPU threads for torch")


class _SegmentOutputSpec(TraitedSpec):
    out_probseg = File(exists=True, desc="lesion probability on the input grid")


class SegmentLesions(SimpleInterface):
    """Lesion probability of one session (mdgru_bids.model.inference.segment).

    Inference draws nothing at random, but kernels may: torch is held to deterministic
    algorithms (on CUDA that needs cuBLAS's fixed workspace, set before its first use), so
    the same input, device, precision and thread count give the same probabilities.
    """

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        import numpy as np
        import torch

        from mdgru_bids.model.files import load_model
        from mdgru_bids.model.inference import segment
        from mdgru_bids.nifti import load_array, save_like, work_name

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(max(1, self.inputs.num_threads))
        model = load_model(self.inputs.model, self.inputs.device)
        images = [load_array(f)[0] for f in self.inputs.in_files]
        mask, ref = load_array(self.inputs.mask_file, np.uint8)
        zooms = tuple(float(z) for z in ref.header.get_zooms()[:3])
        prob = segment(
            model, images, mask > 0, zooms, self.inputs.device, self.inputs.precision,
            tta=self.inputs.tta,
        )  # fmt: skip
        out = os.path.join(runtime.cwd, work_name("lesion_probseg"))
        self._results["out_probseg"] = str(save_like(prob, ref, out))
        return runtime
