"""Axes, units, cameras and the normal-map encoding — defined here and nowhere else.

Head frame (the canonical frame shared by the rig, the normal maps, the NeRF bound and the exported mesh):
    units   metres
    +x      the subject's left (image right in a frontal view)
    +y      up
    +z      out of the face (the face looks toward +z); this is also glTF's frame (+Y up, front faces +Z)
    origin  the centroid of the rig's front-face (normal-map) region of its neutral shape, the way Deep3DFaceRecon
            recentres BFM's mean shape — so the official prior's cameras, which look at the origin, frame the face.

Blender's world is +Z up with the front facing -Y: head (x, y, z) -> Blender (x, -z, y), exactly what Blender's glTF
importer does, so a GLB written in the head frame lands on a rig built with :func:`head_to_blender`.

Cameras use OpenCV axes (x right, y down, z forward), pixel (0, 0) is the top-left corner of the top-left pixel and
pixel centres sit at +0.5. ``c2w`` maps camera to head-frame coordinates.

The reference implementation works in "Joker units" (0.12 x decimetres, i.e. 1 unit = 1/1.2 m) with the camera
1.2 units from the origin; the constants below convert its numbers into metres once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- units --------------------------------------------------------------------------------------------------------
# What every result's metadata says about its geometry (the generate job's and the export's alike).
HEAD_FRAME = "head (glTF +Y up, +Z out of the face)"
HEAD_UNITS = "m"
JOKER_UNIT_M = 1.0 / 1.2  # one reference NeRF unit in metres (NeRF units = 0.12 x decimetres)
CAMERA_DISTANCE_M = 1.0  # Deep3DFaceRecon's camera at z = 10 dm
NERF_BOUND_RADIUS_M = 0.25 * JOKER_UNIT_M  # the reference bbox [-0.25, 0.25]^3 in Joker units
BLOB_RADIUS_M = 0.125 * JOKER_UNIT_M  # density blob bias crosses zero here (blob_magic3d)

# --- intrinsics ---------------------------------------------------------------------------------------------------
# Deep3DFaceRecon: focal 1015 at 224 px; the Joker crop (1024 -> 700 -> 512 around a face scaled to 300/s_pos, which
# Deep3DFaceRecon itself re-crops at 102/224) gives f_512 = 1015 * (512/700) * (300/102).  The reference re-centres
# every view on the face; we keep the principal point at the centre, which our renders and cameras share exactly.
REFERENCE_RES = 512
FOCAL_512_PX = 1015.0 * (512.0 / 700.0) * (300.0 / 102.0)  # ~2183.5 px, vertical FoV ~13.4 deg

# --- the reference distillation grid ------------------------------------------------------------------------------
GRID_N_AZ, GRID_N_EL = 20, 20
GRID_AZ_DEG, GRID_EL_DEG = 45.0, 20.0  # azimuth in [-45, 45], elevation in [-20, 20]

# --- normal-map encoding --------------------------------------------------------------------------------------------
# Camera-space normals: red grows to image right, green up, blue toward the camera; (n * 0.5 + 0.5) * 255, black
# background. Deep3DFaceRecon interpolates vertex normals barycentrically and does not renormalise them.
NORMALS_RENORMALISED = False
# OpenCV camera axes (x right, y down, z forward) -> the normal map's (x right, y up, z toward the camera), per axis.
OPENCV_TO_NORMAL_FRAME = (1.0, -1.0, -1.0)


def euler_to_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Head rotation as Deep3DFaceRecon builds it: R = Rz(roll) @ Ry(yaw) @ Rx(pitch), for column vectors.

    Angles in radians. Positive pitch turns the face down, positive yaw turns it toward image right (the subject's
    left), as seen by the fixed camera on +z. Returns float64 [3, 3].
    """
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in the head frame.

    K:      float64 [3, 3] intrinsics in pixels, top-left pixel-corner origin.
    c2w:    float64 [4, 4] camera-to-head transform, OpenCV camera axes (x right, y down, z forward).
    width, height: image size in pixels.
    """

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int

    @property
    def w2c(self) -> np.ndarray:
        """float64 [4, 4] head-to-camera transform (OpenCV)."""
        return np.linalg.inv(self.c2w)

    @property
    def centre(self) -> np.ndarray:
        """float64 [3] camera centre in the head frame."""
        return self.c2w[:3, 3].copy()

    def scaled(self, width: int, height: int | None = None) -> "Camera":
        """The same camera at another resolution (K scaled as the reference does: K * H / 512)."""
        height = width if height is None else height
        s = np.diag([width / self.width, height / self.height, 1.0])
        return Camera(s @ self.K, self.c2w, width, height)


def intrinsics(res: int = REFERENCE_RES, focal_512: float = FOCAL_512_PX) -> np.ndarray:
    """float64 [3, 3] square-pixel intrinsics at ``res`` with the principal point at the image centre."""
    f = focal_512 * res / REFERENCE_RES
    return np.array([[f, 0.0, res / 2.0], [0.0, f, res / 2.0], [0.0, 0.0, 1.0]])


def orbit_camera(az_deg: float, el_deg: float, res: int = REFERENCE_RES, distance: float = CAMERA_DISTANCE_M,
                 focal_512: float = FOCAL_512_PX) -> Camera:
    """The camera that sees the head as Deep3DFaceRecon's fixed camera sees it rotated by angle [el, az, 0].

    The reference rotates the head (p_cam = R p) in front of a camera at z = +distance looking down -z; expressed in
    the head frame the camera sits at R^T (0, 0, distance) with OpenCV rotation R^T diag(1, -1, -1).
    Positive az: the face turns toward image right, i.e. the camera moves to the subject's right (-x).
    Positive el: the face pitches down, i.e. the camera moves above.
    """
    rot = euler_to_matrix(np.radians(el_deg), np.radians(az_deg), 0.0)
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T @ np.diag([1.0, -1.0, -1.0])
    c2w[:3, 3] = rot.T @ np.array([0.0, 0.0, distance])
    return Camera(intrinsics(res, focal_512), c2w, res, res)


def grid_angles(n_az: int = GRID_N_AZ, n_el: int = GRID_N_EL, az_deg: float = GRID_AZ_DEG,
                el_deg: float = GRID_EL_DEG) -> np.ndarray:
    """float64 [n_az * n_el, 2] (az, el) in degrees, azimuth the outer loop: view j = i_az * n_el + i_el."""
    az = np.linspace(-az_deg, az_deg, n_az)
    el = np.linspace(-el_deg, el_deg, n_el)
    return np.array([(a, e) for a in az for e in el], dtype=np.float64)


def reference_grid(res: int = REFERENCE_RES, n_az: int = GRID_N_AZ, n_el: int = GRID_N_EL,
                   az_deg: float = GRID_AZ_DEG, el_deg: float = GRID_EL_DEG) -> list[Camera]:
    """The reference distillation views (400 by default), in the reference's order. az_deg / el_deg: half-ranges
    in degrees (``DistillConfig.view_az_deg`` / ``view_el_deg``)."""
    return [orbit_camera(a, e, res) for a, e in grid_angles(n_az, n_el, az_deg, el_deg)]


def pixel_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres: origins float64 [H, W, 3], unit directions float64 [H, W, 3], head frame."""
    K = camera.K
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    d = d_cam @ camera.c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return np.broadcast_to(camera.c2w[:3, 3], d.shape).copy(), d


def opencv_to_normal_frame(n_cv: np.ndarray) -> np.ndarray:
    """[..., 3] OpenCV camera-space vectors -> the normal map's frame (x right, y up, z toward the camera)."""
    return n_cv * np.array(OPENCV_TO_NORMAL_FRAME, dtype=n_cv.dtype)


def encode_normals(n: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normal-map pixels: uint8 [H, W, 3] from normals float [H, W, 3] (normal-map frame) and mask bool [H, W]."""
    rgb = (n * 0.5 + 0.5) * mask[..., None]
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def normals_to_control(img: np.ndarray) -> np.ndarray:
    """The prior's control input: uint8 [H, W, 3] normal map -> float32 [3, H, W] in [-1, 1] (background -1)."""
    return (img.astype(np.float32).transpose(2, 0, 1) / 255.0) * 2.0 - 1.0


def head_to_blender(p: np.ndarray) -> np.ndarray:
    """[..., 3] head-frame points (metres) -> Blender world (Z up, front faces -Y): (x, y, z) -> (x, -z, y)."""
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def blender_to_head(p: np.ndarray) -> np.ndarray:
    """Inverse of :func:`head_to_blender`."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


# --- projection ---------------------------------------------------------------------------------------------------
def project_points(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame points [..., 3] -> pixel coordinates float64 [..., 2] (top-left corner origin, x right, y down)
    and camera-space depth float64 [...] (OpenCV z, metres; points behind the camera have z <= 0)."""
    uv, z, _, _ = _project(camera, points)
    return uv, z


def project_points_jacobian(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`project_points` of head-frame points [N, 3] (pixels float64 [N, 2], depth float64 [N]) and the
    pixels' derivative by the points, float64 [N, 2, 3] (the fits' Gauss-Newton steps chain it with their own)."""
    uv, z, p, safe = _project(camera, points)
    fx, fy = camera.K[0, 0], camera.K[1, 1]
    d = np.zeros((len(p), 2, 3))  # d(u, v) / d(camera-space point)
    d[:, 0, 0], d[:, 0, 2] = fx / safe, -fx * p[:, 0] / safe ** 2
    d[:, 1, 1], d[:, 1, 2] = fy / safe, -fy * p[:, 1] / safe ** 2
    return uv, z, d @ camera.w2c[:3, :3]


def _project(camera: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels [..., 2], depth [...], camera-space points [..., 3] and the depth kept off zero, for the two above."""
    w2c = camera.w2c
    p = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = p[..., 2]
    safe = np.where(np.abs(z) > 1e-12, z, 1e-12)
    K = camera.K
    uv = np.stack([K[0, 0] * p[..., 0] / safe + K[0, 2], K[1, 1] * p[..., 1] / safe + K[1, 2]], axis=-1)
    return uv, z, p, safe


def fov_y_deg(camera: Camera) -> float:
    """Vertical field of view in degrees (principal point at the centre)."""
    return float(np.degrees(2.0 * np.arctan(camera.height / (2.0 * camera.K[1, 1]))))


# --- Blender -------------------------------------------------------------------------------------------------------
# Head frame -> Blender world as a 4x4 (the linear map of head_to_blender). Blender cameras look down their local -Z
# with +Y up (OpenGL), so c2w_blender = HEAD_TO_BLENDER @ c2w_opencv @ OPENCV_TO_OPENGL.
HEAD_TO_BLENDER = np.array([[1.0, 0, 0, 0], [0, 0, -1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])
BLENDER_TO_HEAD = HEAD_TO_BLENDER.T  # a proper rotation: its inverse is its transpose
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
BLENDER_SENSOR_MM = 36.0


@dataclass(frozen=True)
class BlenderCamera:
    """Blender camera parameters for a :class:`Camera` (sensor_fit 'AUTO': the sensor spans the larger side).

    matrix_world: float64 [4, 4] object matrix in Blender's world (Z up, the head's front facing -Y).
    lens_mm, sensor_width_mm: camera.data.lens / sensor_width.  shift_x, shift_y: camera.data.shift_x/y in units
    of the larger image side.  resolution_x/y: scene.render.resolution_x/y at 100 %.
    """

    matrix_world: np.ndarray
    lens_mm: float
    sensor_width_mm: float
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    sensor_fit: str = "AUTO"


def camera_to_blender(camera: Camera, sensor_width_mm: float = BLENDER_SENSOR_MM) -> BlenderCamera:
    """The Blender camera that renders exactly ``camera``'s image (square pixels: fx must equal fy)."""
    K, W, H = camera.K, camera.width, camera.height
    if not np.isclose(K[0, 0], K[1, 1], rtol=1e-9):
        raise ValueError(f"camera.K: expected square pixels (fx == fy), received fx={K[0, 0]}, fy={K[1, 1]} — "
                         "Blender cameras have one focal length; resample the image to square pixels")
    side = max(W, H)
    return BlenderCamera(
        matrix_world=HEAD_TO_BLENDER @ camera.c2w @ OPENCV_TO_OPENGL,
        lens_mm=float(K[0, 0] * sensor_width_mm / side), sensor_width_mm=float(sensor_width_mm),
        shift_x=float((W / 2.0 - K[0, 2]) / side), shift_y=float((K[1, 2] - H / 2.0) / side),
        resolution_x=int(W), resolution_y=int(H))


def camera_from_blender(bc: BlenderCamera) -> Camera:
    """Inverse of :func:`camera_to_blender` (for the add-on's viewport or scene camera; sensor_fit 'AUTO')."""
    if bc.sensor_fit != "AUTO":
        raise ValueError(f"sensor_fit: expected 'AUTO', received {bc.sensor_fit!r} — set the camera's Sensor Fit "
                         "to Auto")
    W, H = bc.resolution_x, bc.resolution_y
    side = max(W, H)
    f = bc.lens_mm / bc.sensor_width_mm * side
    K = np.array([[f, 0.0, W / 2.0 - bc.shift_x * side], [0.0, f, H / 2.0 + bc.shift_y * side], [0.0, 0.0, 1.0]])
    c2w = BLENDER_TO_HEAD @ np.asarray(bc.matrix_world, dtype=np.float64) @ OPENCV_TO_OPENGL
    return Camera(K, c2w, W, H)


def crop_camera(res: int = REFERENCE_RES) -> Camera:
    """The camera of the reference crop (the aligned 512² portrait): the frontal view of the grid, principal point at
    the centre, camera at (0, 0, 1) m looking at the head-frame origin. The rig fitted to a portrait's landmarks is
    posed (rotation and translation) in front of this camera."""
    return orbit_camera(0.0, 0.0, res)
