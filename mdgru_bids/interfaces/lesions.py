"""Nipype interfaces over mdgru_bids.lesions: masks, change maps and lesion tables."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mdgru_bids.io_spec import CHANGE_COLUMNS, LESION_COLUMNS
from mdgru_bids.lesions.change import ChangeThresholds
from mdgru_bids.lesions.components import LESION_THRESHOLD, MIN_LESION_MM3
from mdgru_bids.lesions.longitudinal import Evidence


class _LesionMaskInputSpec(BaseInterfaceInputSpec):
    probseg = File(exists=True, mandatory=True, desc="lesion probability map")
    threshold = traits.Float(
        LESION_THRESHOLD, usedefault=True, desc="probability above which a voxel is lesion"
    )
    min_volume_mm3 = traits.Float(MIN_LESION_MM3, usedefault=True, desc="smallest lesion kept")


class _LesionMaskOutputSpec(TraitedSpec):
    out_labels = File(exists=True, desc="lesion ids (int32), 0 = background")
    out_mask = File(exists=True, desc="lesion mask (uint8)")


class LesionMask(SimpleInterface):
    """Threshold a probability map into lesions of at least the minimum size."""

    input_spec = _LesionMaskInputSpec
    output_spec = _LesionMaskOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from mdgru_bids.lesions.components import label_lesions, threshold_mask
        from mdgru_bids.nifti import load_array, save_like

        prob, img = load_array(self.inputs.probseg)
        zooms = img.header.get_zooms()[:3]
        mask = threshold_mask(prob, self.inputs.threshold, self.inputs.min_volume_mm3, zooms)
        labels, _ = label_lesions(mask)
        self._results["out_labels"] = str(
            save_like(labels, img, os.path.join(runtime.cwd, "lesion_labels.nii.gz"), np.int32)
        )
        self._results["out_mask"] = str(
            save_like(mask, img, os.path.join(runtime.cwd, "lesion_mask.nii.gz"), np.uint8)
        )
        return runtime


class _LesionChangeInputSpec(BaseInterfaceInputSpec):
    previous_labels = File(exists=True, mandatory=True, desc="lesion ids, earlier session")
    current_labels = File(exists=True, mandatory=True, desc="lesion ids, later session, same grid")
    previous_probseg = File(exists=True, mandatory=True, desc="lesion probability, earlier")
    current_probseg = File(exists=True, mandatory=True, desc="lesion probability, later")
    previous_flair = File(exists=True, mandatory=True, desc="preprocessed FLAIR, earlier")
    current_flair = File(exists=True, mandatory=True, desc="preprocessed FLAIR, later")
    previous_mask = File(exists=True, mandatory=True, desc="brain mask, earlier")
    current_mask = File(exists=True, mandatory=True, desc="brain mask, later")
    min_change_mm3 = traits.Float(ChangeThresholds.min_change_mm3, usedefault=True)
    min_change_fraction = traits.Float(ChangeThresholds.min_change_fraction, usedefault=True)
    absent_probability = traits.Float(Evidence.absent, usedefault=True)
    absent_quantile = traits.Float(Evidence.absent_quantile, usedefault=True)
    min_flair_change = traits.Float(Evidence.min_flair_change, usedefault=True)


class _LesionChangeOutputSpec(TraitedSpec):
    out_dseg = File(exists=True, desc="change labels (DESIGN.md: 1 stable ... 5 resolved)")
    out_table = File(exists=True, desc="one row per matched group of lesions")


class LesionChange(SimpleInterface):
    """Match lesions of consecutive sessions and classify their change from both sessions'
    evidence (lesions.longitudinal)."""

    input_spec = _LesionChangeInputSpec
    output_spec = _LesionChangeOutputSpec

    def _run_interface(self, runtime):
        import numpy as np
        import pandas as pd

        from mdgru_bids.lesions.longitudinal import decide_change, flair_z
        from mdgru_bids.nifti import load_array, save_like

        prev, img = load_array(self.inputs.previous_labels, np.int32)
        curr, _ = load_array(self.inputs.current_labels, np.int32)
        prob, z = {}, {}
        for when in ("previous", "current"):
            prob[when] = load_array(getattr(self.inputs, f"{when}_probseg"))[0]
            brain = load_array(getattr(self.inputs, f"{when}_mask"), np.uint8)[0] > 0
            z[when] = flair_z(load_array(getattr(self.inputs, f"{when}_flair"))[0], brain)
        voxel = float(abs(np.linalg.det(img.affine[:3, :3])))
        thresholds = ChangeThresholds(self.inputs.min_change_mm3, self.inputs.min_change_fraction)
        evidence = Evidence(
            self.inputs.absent_probability, self.inputs.absent_quantile,
            self.inputs.min_flair_change,
        )  # fmt: skip
        groups, dseg = decide_change(
            prev, curr, prob["previous"], prob["current"], z["previous"], z["current"], voxel,
            thresholds, evidence,
        )  # fmt: skip
        rows = [
            {
                "class": g.name,
                "lesion_ids": _ids(g.current),
                "previous_lesion_ids": _ids(g.previous),
                "volume_mm3": round(g.current_mm3, 3),
                "previous_volume_mm3": round(g.previous_mm3, 3),
                "volume_change_mm3": round(g.current_mm3 - g.previous_mm3, 3),
            }
            for g in groups
        ]
        table = os.path.join(runtime.cwd, "lesionchange_table.tsv")
        pd.DataFrame(rows, columns=CHANGE_COLUMNS).to_csv(table, sep="\t", index=False)
        self._results["out_table"] = table
        self._results["out_dseg"] = str(
            save_like(dseg, img, os.path.join(runtime.cwd, "lesionchange_dseg.nii.gz"), np.uint8)
        )
        return runtime


class _LesionTableInputSpec(BaseInterfaceInputSpec):
    labels = File(exists=True, mandatory=True, desc="lesion ids in subject space")
    probseg = File(exists=True, mandatory=True, desc="lesion probability on the same grid")
    to_subject = File(exists=True, mandatory=True, desc="session → subject transform (ITK)")
    change_table = File(exists=True, desc="LesionChange table of this session (absent: first)")


class _LesionTableOutputSpec(TraitedSpec):
    out_table = File(exists=True)


class LesionTable(SimpleInterface):
    """One row per lesion: partial volume in subject space (lesions.longitudinal), centroid
    in the session's scanner coordinates, probability, and how it changed since last time."""

    input_spec = _LesionTableInputSpec
    output_spec = _LesionTableOutputSpec

    def _run_interface(self, runtime):
        import numpy as np
        import pandas as pd
        from nipype.interfaces.base import isdefined

        from mdgru_bids.lesions.components import lesion_measures
        from mdgru_bids.lesions.longitudinal import partial_volumes
        from mdgru_bids.nifti import load_array
        from mdgru_bids.transforms import read_linear

        labels, img = load_array(self.inputs.labels, np.int32)
        prob, _ = load_array(self.inputs.probseg)
        to_session = np.linalg.inv(read_linear(self.inputs.to_subject))
        rows = lesion_measures(labels, to_session @ img.affine, prob)
        volumes = partial_volumes(labels, prob, float(abs(np.linalg.det(img.affine[:3, :3]))))
        change = {}
        if isdefined(self.inputs.change_table):
            groups = pd.read_csv(self.inputs.change_table, sep="\t", dtype=str)
            for cls, ids, previous in zip(
                groups["class"], groups["lesion_ids"], groups["previous_lesion_ids"], strict=True
            ):
                for lesion in str(ids).split(","):
                    change[lesion] = (cls, previous)
        for row in rows:
            row.pop("voxels")
            row["volume_mm3"] = float(volumes[row["lesion_id"]])
            row["class"], row["previous_lesion_ids"] = change.get(
                str(row["lesion_id"]), ("n/a", "n/a")
            )
        table = os.path.join(runtime.cwd, "lesions_table.tsv")
        frame = pd.DataFrame(rows, columns=LESION_COLUMNS).round(4)
        frame.to_csv(table, sep="\t", index=False, na_rep="n/a")
        self._results["out_table"] = table
        return runtime


def _ids(ids: tuple[int, ...]) -> str:
    return ",".join(str(i) for i in ids) if ids else "n/a"
