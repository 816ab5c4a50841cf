"""Nipype interfaces over mdgru_bids.lesions: masks, change maps and lesion tables."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from mdgru_bids.io_spec import CHANGE_COLUMNS, LESION_COLUMNS
from mdgru_bids.lesions.change import ChangeThresholds, LesionGroup
from mdgru_bids.lesions.components import LESION_THRESHOLD, MIN_LESION_MM3
from mdgru_bids.lesions.longitudinal import Evidence


class _SubjectLesionsInputSpec(BaseInterfaceInputSpec):
    probseg = InputMultiObject(
        File(exists=True),
        mandatory=True,
        desc="lesion probability, subject space, one per session in acquisition order",
    )
    flair = InputMultiObject(File(exists=True), mandatory=True, desc="FLAIR, subject space")
    mask = InputMultiObject(File(exists=True), mandatory=True, desc="brain mask, subject space")
    native_flair = InputMultiObject(
        File(exists=True),
        mandatory=True,
        desc="each session's FLAIR on its own grid (its voxel size)",
    )
    threshold = traits.Float(
        LESION_THRESHOLD, usedefault=True, desc="probability above which a voxel is lesion"
    )
    min_volume_mm3 = traits.Float(MIN_LESION_MM3, usedefault=True, desc="smallest lesion kept")
    consistent = traits.Bool(True, usedefault=True, desc="one answer where nothing changed")
    min_change_mm3 = traits.Float(ChangeThresholds.min_change_mm3, usedefault=True)
    min_change_fraction = traits.Float(ChangeThresholds.min_change_fraction, usedefault=True)
    absent_probability = traits.Float(Evidence.absent, usedefault=True)
    absent_quantile = traits.Float(Evidence.absent_quantile, usedefault=True)
    min_flair_change = traits.Float(Evidence.min_flair_change, usedefault=True)


class _SubjectLesionsOutputSpec(TraitedSpec):
    out_probseg = OutputMultiObject(File(exists=True), desc="lesion probability per session")
    out_labels = OutputMultiObject(File(exists=True), desc="lesion ids (int32) per session")
    out_mask = OutputMultiObject(File(exists=True), desc="lesion mask (uint8) per session")
    out_dseg = OutputMultiObject(
        File(exists=True), desc="change labels of each session after the first (DESIGN.md)"
    )
    out_table = OutputMultiObject(
        File(exists=True), desc="one row per matched group of lesions, each later session"
    )


class SubjectLesions(SimpleInterface):
    """All of a subject's sessions at once: lesions, consistent where nothing changed, and
    their change between consecutive sessions from both sessions' evidence
    (lesions.longitudinal)."""

    input_spec = _SubjectLesionsInputSpec
    output_spec = _SubjectLesionsOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np
        import pandas as pd

        from mdgru_bids.lesions.components import min_voxels
        from mdgru_bids.lesions.longitudinal import (
            SessionMaps,
            acquired_resolution,
            flair_z,
            subject_lesions,
        )
        from mdgru_bids.nifti import load_array, save_like, work_name

        sessions = []
        for prob_file, flair_file, mask_file, native in zip(
            self.inputs.probseg,
            self.inputs.flair,
            self.inputs.mask,
            self.inputs.native_flair,
            strict=True,
        ):
            prob, img = load_array(prob_file)
            brain = load_array(mask_file, np.uint8)[0] > 0
            z = flair_z(load_array(flair_file)[0], brain)
            resolution = acquired_resolution(nib.load(native).affine, img.affine)
            sessions.append(SessionMaps(prob, z, brain, tuple(resolution)))
        voxel_size = tuple(float(v) for v in img.header.get_zooms()[:3])
        voxel = float(np.prod(voxel_size))
        result = subject_lesions(
            sessions, voxel_size, self.inputs.threshold,
            min_voxels(self.inputs.min_volume_mm3, voxel),
            ChangeThresholds(self.inputs.min_change_mm3, self.inputs.min_change_fraction),
            Evidence(self.inputs.absent_probability, self.inputs.absent_quantile,
                     self.inputs.min_flair_change),
            self.inputs.consistent,
        )  # fmt: skip
        cwd = runtime.cwd
        keys = ("out_probseg", "out_labels", "out_mask", "out_dseg", "out_table")
        out: dict[str, list[str]] = {key: [] for key in keys}
        for i, (prob, labels) in enumerate(zip(result.prob, result.labels, strict=True)):
            for key, data, dtype in (("out_probseg", prob, np.float32),
                                     ("out_labels", labels, np.int32),
                                     ("out_mask", labels > 0, np.uint8)):  # fmt: skip
                name = work_name(f"session{i}_{key.removeprefix('out_')}", dtype)
                out[key].append(str(save_like(data, img, os.path.join(cwd, name), dtype)))
        for i, (groups, dseg) in enumerate(result.changes, start=1):
            name = os.path.join(cwd, work_name(f"session{i}_lesionchange_dseg", np.uint8))
            out["out_dseg"].append(str(save_like(dseg, img, name, np.uint8)))
            table = os.path.join(cwd, f"session{i}_lesionchange_table.tsv")
            pd.DataFrame([_change_row(g) for g in groups], columns=CHANGE_COLUMNS).to_csv(
                table, sep="\t", index=False
            )
            out["out_table"].append(table)
        self._results.update(out)
        return runtime


def _change_row(g: LesionGroup) -> dict:
    return {
        "class": g.name,
        "lesion_ids": _ids(g.current),
        "previous_lesion_ids": _ids(g.previous),
        "volume_mm3": round(g.current_mm3, 3),
        "previous_volume_mm3": round(g.previous_mm3, 3),
        "volume_change_mm3": round(g.current_mm3 - g.previous_mm3, 3),
    }


class _LesionTableInputSpec(BaseInterfaceInputSpec):
    labels = File(exists=True, mandatory=True, desc="lesion ids in subject space")
    probseg = File(exists=True, mandatory=True, desc="lesion probability on the same grid")
    to_subject = File(exists=True, mandatory=True, desc="session → subject transform (ITK)")
    change_table = File(exists=True, desc="SubjectLesions table of this session (absent: first)")


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
