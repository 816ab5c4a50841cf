"""Compare two mdgru-bids output folders file by file: NIfTI voxel data and header geometry,
the datasets inside HDF5 transforms (ITK stamps each file with its writing time), JSON sidecars
(apart from time stamps), and TSV tables and other text byte for byte; prints one line per
difference and exits 1 if there is any. Used to show that a refactor changed no output.

Usage: python benchmarks/compare_derivatives.py BEFORE_DIR AFTER_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

#: Files that hold run times, host names or absolute paths rather than results.
VOLATILE = ("logs/pypeline.log",)
TIME_KEYS = {"DateTime", "Timestamp", "ProcessingTime"}


def _json(path: Path) -> object:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in TIME_KEYS} if isinstance(data, dict) else data


def _h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        found: dict[str, np.ndarray] = {}
        f.visititems(
            lambda name, obj: (
                found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None
            )
        )
        return found


def differences(before: Path, after: Path) -> list[str]:
    found = []
    names = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names_after = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    found += [f"only before: {n}" for n in sorted(names - names_after)]
    found += [f"only after: {n}" for n in sorted(names_after - names)]
    for name in sorted(names & names_after):
        a, b = before / name, after / name
        text = str(name)
        if text in VOLATILE or text.endswith(".svg") or text.endswith(".html"):
            continue  # figures and pages embed ids and times; their inputs are compared
        if text.endswith((".nii", ".nii.gz")):
            x, y = nib.load(a), nib.load(b)
            if not np.array_equal(np.asanyarray(x.dataobj), np.asanyarray(y.dataobj)):
                found.append(f"voxels differ: {name}")
            if not np.array_equal(x.affine, y.affine) or x.get_data_dtype() != y.get_data_dtype():
                found.append(f"grid or data type differs: {name}")
        elif text.endswith(".h5"):
            x, y = _h5(a), _h5(b)
            if x.keys() != y.keys() or any(not np.array_equal(x[k], y[k]) for k in x):
                found.append(f"transform differs: {name}")
        elif text.endswith(".json"):
            if _json(a) != _json(b):
                found.append(f"JSON differs: {name}")
        elif a.read_bytes() != b.read_bytes():
            found.append(f"bytes differ: {name}")
    return found


def main() -> int:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    found = differences(before, after)
    print(
        "\n".join(found) or f"identical: {sum(1 for p in before.rglob('*') if p.is_file())} files"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
