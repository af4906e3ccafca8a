"""MTCNN on real photos that installed packages ship: faces, their 5 landmarks in order, none where there is none;
the pinned weights; the face mesh's 68 landmarks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from backend.fit import FitError, detect_faces, detect_landmarks, load_photo
from backend.fit import mtcnn


@pytest.fixture(scope="module")
def astronaut(astronaut_path):
    return load_photo(astronaut_path)


def _check_face_layout(face, box_hint):
    x0, y0, x1, y1 = face.box
    assert abs((x0 + x1) / 2 - box_hint[0]) < 25 and abs((y0 + y1) / 2 - box_hint[1]) < 30
    le, re, nose, lm, rm = face.landmarks5
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0]  # image-left eye and mouth corner first
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])  # eyes above the nose above the mouth
    assert ((face.landmarks5 >= face.box[:2]) & (face.landmarks5 <= face.box[2:])).all()
    assert face.score > 0.95


def test_astronaut_and_hopper_have_one_face_each(astronaut, hopper_path):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    _check_face_layout(faces[0], (224, 117))  # Eileen Collins' face, upper middle of the 512² photo
    hopper = load_photo(hopper_path)
    faces = detect_faces(hopper)
    assert len(faces) == 1
    _check_face_layout(faces[0], (265, 230))


def test_detections_follow_the_photo(astronaut):
    """Shift and scale the photo: the landmarks move with it (the detector is not reading a fixed position)."""
    base = detect_faces(astronaut)[0].landmarks5
    canvas = np.zeros((700, 800, 3), np.float32)
    canvas[150:662, 230:742] = astronaut
    moved = detect_faces(canvas)[0].landmarks5
    eye_dist = np.linalg.norm(base[1] - base[0])
    assert np.abs(moved - (base + [230, 150])).max() < 0.1 * eye_dist


def test_no_face_in_faceless_photos(faceless_paths):
    for path in faceless_paths:
        assert detect_faces(load_photo(path)) == [], path.name


def test_several_faces_largest_first(astronaut, hopper_path):
    hopper = load_photo(hopper_path)
    small = hopper[::2, ::2]  # Grace Hopper at half size beside the astronaut
    canvas = np.zeros((600, 900, 3), np.float32)
    canvas[40:552, :512] = astronaut
    canvas[100:100 + small.shape[0], 560:560 + small.shape[1]] = small
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].size > faces[1].size and faces[1].box[0] > 540


def test_weights_are_checked_before_loading(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(mtcnn.weights_dir(), folder)
    assert len(mtcnn.load_weights("onet", folder)) == 21  # the genuine file loads
    data = bytearray((folder / "onet.lz4").read_bytes())
    data[100] ^= 0xFF
    (folder / "onet.lz4").write_bytes(bytes(data))
    with pytest.raises(FitError) as e:
        mtcnn.load_weights("onet", folder)
    assert e.value.code == "bad_model" and "pip install" in e.value.hint


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    np.testing.assert_array_equal(mtcnn.nms(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(mtcnn.nms(boxes[[0, 2]], scores[[0, 2]], 0.5), [0, 1])


def test_68_landmarks_on_the_astronaut(astronaut):
    face = detect_faces(astronaut)[0]
    lm = detect_landmarks(astronaut, face)
    assert lm.shape == (68, 2)
    le, re, nose, ml, mr = face.landmarks5
    eye_dist = np.linalg.norm(re - le)
    # iBUG layout, checked against MTCNN's independent points: eye centres, nose tip, mouth corners
    assert np.linalg.norm(lm[36:42].mean(0) - le) < 0.15 * eye_dist
    assert np.linalg.norm(lm[42:48].mean(0) - re) < 0.15 * eye_dist
    assert np.linalg.norm(lm[30] - nose) < 0.2 * eye_dist
    assert np.linalg.norm(lm[48] - ml) < 0.2 * eye_dist and np.linalg.norm(lm[54] - mr) < 0.2 * eye_dist
    assert lm[8, 1] > lm[57, 1] > lm[33, 1] > lm[27, 1]  # chin below lips below nose below the brows' middle
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]  # the jaw runs from image left to right


@pytest.mark.slow
def test_steadied_points_hold_the_crop_where_the_cascade_jitters(hopper_path, cameraman_path):
    """MTCNN's own points move the reference crop by many pixels between scaled / shifted / padded copies; the
    steadied points (the O-Net averaged over jittered boxes) hold it, and stay MTCNN's: the crop still frames the
    face as the raw points do, within their own jitter."""
    from backend.fit.metrics import crop_stability

    hopper = load_photo(hopper_path)
    raw = crop_stability(hopper, "mtcnn raw")
    steady = crop_stability(hopper, "mtcnn")
    assert max(raw.moved.values()) > 8.0, raw.moved  # the problem (18 px measured)
    assert max(steady.moved.values()) <= 2.0, steady.moved  # the target; 1.15 px measured
    assert steady.point_jitter.shape == (5,) and steady.point_jitter.max() < 1.0 < raw.point_jitter.max()
    assert steady.to_mean_raw < raw.raw_spread  # closer to the reference's mean framing than its own jitter
    # a small (~80 px) face in near profile: raw 13.6 px, steadied 1.75 px (the mesh's points: 11.6 px)
    camera = crop_stability(load_photo(cameraman_path), "mtcnn")
    assert max(camera.moved.values()) <= 2.0, camera.moved


def test_steady_landmarks_are_mtcnns_points_refined(astronaut):
    """Same order and layout as the cascade's, within a few per cent of the eye distance of them."""
    from backend.fit.detect import steady_landmarks

    face = detect_faces(astronaut)[0]
    steady = steady_landmarks(astronaut, face)
    assert steady.shape == (5, 2) and steady.dtype == np.float64
    assert np.linalg.norm(steady - face.landmarks5, axis=1).max() < 0.1 * face.eye_distance
    le, re, nose, lm, rm = steady
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])


def test_face_window_maps_image_points_to_window_points():
    """The resampled window the steadying runs in: a dot at a known image point lands at (p - origin) k, so the
    landmarks found there map back to the photo exactly; the box side becomes STEADY_SIDE_PX; grey outside."""
    image = np.full((300, 400, 3), 128, np.uint8)  # the fill's grey: no edge at the photo's border
    dot = np.array([141.0, 97.0])  # corner coordinates of the dot pixel's top-left corner
    image[97, 141] = 255
    square = np.array([101.0, 61.0, 180.0, 140.0])  # pixel-index box, side 79 px, near the top edge
    window, origin, k = mtcnn._face_window(image, square)
    assert abs(79 * k - mtcnn.STEADY_SIDE_PX) < 1.0 and window.shape[0] == window.shape[1]
    assert origin[1] < 0  # the window reaches above the photo
    w = np.clip(window[..., 0].astype(np.float64) - 128.0, 0, None)  # Lanczos' negative lobes dropped
    ys, xs = np.nonzero(w > 4)
    centroid = np.array([(xs * w[ys, xs]).sum(), (ys * w[ys, xs]).sum()]) / w[ys, xs].sum() + 0.5
    np.testing.assert_allclose(centroid, (dot + 0.5 - origin) * k, rtol=0, atol=0.1 * k)
    black, _, _ = mtcnn._face_window(np.zeros_like(image), square)
    assert black[0, 0, 0] == 128 and black[-1, -1, 0] == 0  # grey above the photo, the photo inside


def test_subpixel_patches_match_the_cascades_on_whole_pixel_boxes(astronaut):
    """The steadying's sampler equals the cascade's area resampling where both apply (whole-pixel boxes whose side
    is a multiple of 48), and moves smoothly with a sub-pixel shift."""
    import torch

    from backend.fit.crop import to_uint8

    img = (torch.from_numpy(to_uint8(astronaut)).permute(2, 0, 1)[None].float() - 127.5) * 0.0078125
    boxes = np.array([[150.0, 40.0, 245.0, 135.0], [101.0, 11.0, 148.0, 58.0]])  # sides 96 and 48
    a = mtcnn._patches(img, boxes, 48).numpy()
    b = mtcnn._patches_subpixel(img, boxes, 48).numpy()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)  # values in -1..1, float32 sums of 4 samples
    half = mtcnn._patches_subpixel(img, boxes[:1] + [0.5, 0, 0.5, 0], 48).numpy()
    whole = mtcnn._patches(img, boxes[:1] + [1, 0, 1, 0], 48).numpy()
    assert np.abs(half - (a[:1] + whole) / 2).mean() < 0.1 * np.abs(whole - a[:1]).mean()


def test_aligned_crop_falls_back_to_the_cascades_points_when_the_steadying_drifts(astronaut, monkeypatch):
    from backend.fit import aligned_crop, landmarks, reference_crop

    face = detect_faces(astronaut)[0]
    crop, _ = aligned_crop(astronaut, face)
    assert crop.aligned_on == "mtcnn, steadied"
    monkeypatch.setattr(landmarks, "steady_landmarks", lambda image, f: f.landmarks5 + 0.2 * f.size)  # drifted
    crop, mesh = aligned_crop(astronaut, face)
    assert crop.aligned_on == "mtcnn" and mesh.shape == (468, 2)
    np.testing.assert_array_equal(crop.image, reference_crop(astronaut, face.landmarks5).image)
