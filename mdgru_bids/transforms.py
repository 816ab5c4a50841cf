"""Linear transforms as 4×4 matrices: ITK/ANTs files, rigid means, the unbiased subject space.

Convention used everywhere in mdgru-bids: a transform is a 4×4 **RAS+ world matrix that maps
points of the moving (source) image's space to the fixed (target) space**, ``x_fixed = A @
x_moving`` in homogeneous mm. Composition then reads left to right as a chain of spaces
(``a_to_c = b_to_c @ a_to_b``), and "session → subject" means what it says for points.

ITK (and so ANTs) stores the opposite direction, in LPS: its transform maps fixed-space points
to moving-space points, because resampling the moving image onto the fixed grid needs, for
every fixed voxel, where to look in the moving image. A file written by :func:`write_linear`
is therefore exactly what ``ants.apply_transforms(fixed, moving, [file])`` needs to resample
the moving image onto the fixed grid; :func:`read_linear` undoes that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nitransforms.io.base import TransformFileError
from nitransforms.linear import Affine
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

#: How far a matrix's linear part may be from a rotation and still count as rigid (the ITK text
#: format keeps about six significant digits).
RIGID_TOLERANCE = 1e-4
MEAN_TOLERANCE = 1e-12  # squared norm of the barycentre update at which the mean has converged
MEAN_MAX_ITERATIONS = 100


def read_linear(path: str | os.PathLike[str]) -> np.ndarray:
    """The moving → fixed RAS+ matrix of an ITK/ANTs linear transform file (.txt, .tfm, .mat).

    Raises ValueError, naming the file, when it holds no single affine-type transform.
    """
    try:
        itk = Affine.from_filename(str(path), fmt="itk").matrix
    except (TransformFileError, ValueError, KeyError, IndexError, NotImplementedError) as err:
        raise ValueError(f"{path}: not a single linear ITK/ANTs transform ({err})") from err
    return np.linalg.inv(itk)


def write_linear(matrix: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a moving → fixed RAS+ matrix as an ITK transform file (text for .txt/.tfm).

    nitransforms writes text parameters with six significant digits: about 1e-4 mm across a
    head, far below any voxel.
    """
    Affine(np.linalg.inv(_as_matrix(matrix))).to_filename(str(path), fmt="itk")
    return Path(path)


def invert_linear(path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write the inverse of a linear transform file: ANTsPy inverts only files named .mat, so
    an inverted text transform is handed to it as a file of its own."""
    return write_linear(np.linalg.inv(read_linear(path)), out_path)


def apply_to_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) points through a 4×4 matrix."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def is_rigid(matrix: np.ndarray, tolerance: float = RIGID_TOLERANCE) -> bool:
    """Whether ``matrix`` is a proper rigid transform (rotation + translation, no reflection)."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1], atol=tolerance):
        return False
    rot = m[:3, :3]
    return bool(np.allclose(rot.T @ rot, np.eye(3), atol=tolerance) and np.linalg.det(rot) > 0)


def mean_rigid(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """The bi-invariant mean of rigid transforms: the exponential barycentre ``M`` with
    ``Σ log(M⁻¹ Xₖ) = 0``, iterated as in Karcher's algorithm from the first transform.

    Unlike the plain log-Euclidean mean, it commutes with composition on either side
    (``mean(A Xₖ B) = A mean(Xₖ) B``), so a subject space built from it does not depend on
    which session the others were registered to. Two transforms give the halfway point.
    Raises ValueError for an empty list or a transform that is not rigid.
    """
    xs = [_as_matrix(m) for m in matrices]
    if not xs:
        raise ValueError("mean_rigid needs at least one transform")
    for i, x in enumerate(xs):
        if not is_rigid(x):
            raise ValueError(f"transform {i} is not rigid (rotation and translation only)")
    mean = xs[0]
    for _ in range(MEAN_MAX_ITERATIONS):
        inv = np.linalg.inv(mean)
        step = np.mean([_log_rigid(inv @ x) for x in xs], axis=0)
        mean = mean @ expm(step)
        if float(np.sum(step**2)) < MEAN_TOLERANCE:
            break
    return _nearest_rigid(mean)


def unbiased_subject_space(to_reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each session's transform into a subject space that favours no session.

    ``to_reference[k]`` maps session k's space to the reference session's (the identity for
    the reference itself, usually session 1). With ``M`` their :func:`mean_rigid`, session k
    goes to subject space by ``M⁻¹ @ to_reference[k]``: the subject space is the reference
    space moved to the mean of all sessions' poses, so the returned transforms average to the
    identity. For two sessions each moves halfway towards the other; the result is the same
    whichever session was the reference.
    """
    inv_mean = np.linalg.inv(mean_rigid(to_reference))
    return [_nearest_rigid(inv_mean @ _as_matrix(x)) for x in to_reference]


def mask_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS+ mm) coordinates, (N, 3), of the centres of a mask's nonzero voxels."""
    return apply_to_points(affine, np.argwhere(np.asarray(mask) > 0).astype(float))


def covering_grid(
    points: np.ndarray, resolution_mm: float, margin_mm: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The smallest axis-aligned RAS+ grid of isotropic ``resolution_mm`` voxels whose voxel
    centres span ``points`` (N, 3) plus ``margin_mm`` on every side: (shape, affine).

    The margin should exceed half the source voxels' diagonal, so that whole voxels, not just
    their centres, lie inside. Raises ValueError for no points or a non-positive resolution.
    """
    if resolution_mm <= 0:
        raise ValueError(f"resolution must be positive, not {resolution_mm:g} mm")
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    if len(points) == 0:
        raise ValueError("cannot place a grid around an empty mask")
    low = points.min(axis=0) - margin_mm
    high = points.max(axis=0) + margin_mm
    shape = np.ceil((high - low) / resolution_mm).astype(int) + 1
    centre = (low + high) / 2
    affine = np.diag([resolution_mm] * 3 + [1.0])
    affine[:3, 3] = centre - resolution_mm * (shape - 1) / 2
    return (int(shape[0]), int(shape[1]), int(shape[2])), affine


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4×4 transform matrix, got shape {m.shape}")
    return m


def _log_rigid(matrix: np.ndarray) -> np.ndarray:
    """The matrix logarithm of a rigid transform (an se(3) element), in closed form: exact
    where scipy.linalg.logm is slow and returns complex round-off."""
    rotvec = Rotation.from_matrix(matrix[:3, :3]).as_rotvec()
    theta = float(np.linalg.norm(rotvec))
    skew = np.array(
        [[0.0, -rotvec[2], rotvec[1]], [rotvec[2], 0.0, -rotvec[0]], [-rotvec[1], rotvec[0], 0.0]]
    )
    if theta < 1e-2:  # Taylor series of the coefficients below, which lose digits here
        a = 1 / 2 - theta**2 / 24 + theta**4 / 720
        b = 1 / 6 - theta**2 / 120 + theta**4 / 5040
    else:
        a, b = (1 - np.cos(theta)) / theta**2, (theta - np.sin(theta)) / theta**3
    v = np.eye(3) + a * skew + b * skew @ skew  # exp of [skew, u] has translation v @ u
    out = np.zeros((4, 4))
    out[:3, :3] = skew
    out[:3, 3] = np.linalg.solve(v, matrix[:3, 3])
    return out


def _nearest_rigid(matrix: np.ndarray) -> np.ndarray:
    """The rotation nearest to the linear part (SVD): removes round-off of log, exp and files."""
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    out = np.eye(4)
    out[:3, :3] = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    out[:3, 3] = matrix[:3, 3]
    return out
