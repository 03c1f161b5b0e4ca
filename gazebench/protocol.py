"""The scoring protocol: one versioned description that every score row carries.

Every map is scored on a square grid (default 224 px, the original image letterboxed); gaze
densities, fixations and region masks are built on it; each method's map is post-processed in
one way (channels summed, absolute value for gradient methods, ReLU for CAM methods, bilinear
resampling).  Numbers from different protocols are never silently mixed: the id changes with
the version, the grid and the gaze convention.
"""

from __future__ import annotations

from gazebench.data.gaze import GazeConvention

PROTOCOL_VERSION = "1"
DEFAULT_GRID = 224
# maps that ignore the model, scored beside every method (gazebench.run.references): floors (no
# image information, or the image's own edges) and the ceiling (other radiologists' gaze against
# one radiologist's gaze); name -> role, the ``role`` column of the leaderboard
REFERENCE_MAPS = {"centre_bias": "floor", "uniform": "floor", "edges": "floor", "inter_observer": "ceiling"}


def protocol_id(grid: int, gaze: GazeConvention) -> str:
    return f"p{PROTOCOL_VERSION}-grid{grid}-{gaze.describe()}"


def protocol_description(grid: int, gaze: GazeConvention) -> dict:
    return {
        "id": protocol_id(grid, gaze),
        "version": PROTOCOL_VERSION,
        "grid": grid,
        "letterbox": "aspect preserved, centred, zero padding",
        "gaze": {"convention": gaze.name, "sigma": gaze.sigma, "duration_weighted": gaze.duration_weighted, "normalised": "sum 1"},
        "postprocess": "channels summed; abs for gradient methods, ReLU for CAM methods; bilinear to the grid",
    }
