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
