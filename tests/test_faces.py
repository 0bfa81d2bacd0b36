"""Face executors with the real dlib models on real faces: scikit-image's astronaut and its edits,
and face-recognition's test photos of two people (its source distribution, from PyPI)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps
from pydantic import ValidationError

from lookalike.document import Chunk, Document, Request
from lookalike.executors.faces import FaceDetector, FaceEncoder
from lookalike.models.faces import (
    CHIP_SIZE,
    DESCRIPTOR_DIM,
    SAME_PERSON,
    FaceModel,
    descriptor_fingerprint,
    face_model_paths,
)

REPO = Path(__file__).resolve().parents[1]

# The astronaut's face in scikit-image's 512 x 512 photo, as dlib's HOG detector finds it (x, y, w, h).
ASTRONAUT_FACE = (175, 76, 91, 91)
# Drops the one weak detection in the astronaut photo (her mission patch, score ~0.12; her face ~1.2).
ONE_FACE = {"min_score": 0.5}

OBAMA = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg"]
BIDEN = ["biden.jpg"]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int = 95, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def detector():
    with FaceDetector({}) as ex:
        yield ex


@pytest.fixture(scope="module")
def encoder():
    with FaceEncoder({}) as ex:
        yield ex


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


def run(executors: list, blobs: list[bytes], kind: str = "index", **parameters: Any) -> list[Document]:
    docs = [Document(id=f"doc{i}", blob=blob) for i, blob in enumerate(blobs)]
    request = Request(kind, docs, parameters=parameters)  # type: ignore[arg-type]
    for ex in executors:
        ex.handle(request)
    by_id = {d.id: d for d in request.docs}
    return [by_id[d.id] for d in docs]


def distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    assert a is not None and b is not None
    return float(np.linalg.norm(a - b))


def near(box: tuple[int, int, int, int] | None, expected: tuple[int, int, int, int], tolerance: int = 8) -> bool:
    assert box is not None
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected, strict=True))


# --- models and parameters -----------------------------------------------------------------------


def test_model_files_fingerprint_and_vector_space():
    predictor, descriptor = face_model_paths()
    assert predictor.name == "shape_predictor_5_face_landmarks.dat" and predictor.is_file()
    assert descriptor.name == "dlib_face_recognition_resnet_model_v1.dat" and descriptor.is_file()
    fingerprint = descriptor_fingerprint()
    assert re.fullmatch(r"dlib-resnet-v1:[0-9a-f]{12}", fingerprint)
    assert FaceEncoder.fingerprint_of(FaceEncoder.Params()) == fingerprint == FaceModel().fingerprint()
    assert FaceEncoder.vector_space_of(FaceEncoder.Params()) == (DESCRIPTOR_DIM, "l2") == (128, "l2")
    assert FaceDetector.fingerprint_of(FaceDetector.Params()) is None


def test_params_are_validated():
    assert FaceDetector.Params().model_dump() == {"upsample": 1, "max_side": 1600, "min_face": 0, "min_score": 0.0}
    with pytest.raises(ValidationError, match="upsample"):
        FaceDetector({"upsample": 4})
    with pytest.raises(ValidationError, match="upsampel"):
        FaceDetector({"upsampel": 1})
    with pytest.raises(ValidationError, match="batch_size"):
        FaceEncoder({"batch_size": 0})


def test_without_the_faces_extra_the_message_says_what_to_install():
    # dlib missing, then the models package missing: each fails with the one-line ModelError, at the
    # point a flow is built (the fingerprint) and when an executor opens.
    script = """
import sys
sys.modules[sys.argv[1]] = None
from lookalike.errors import ModelError
from lookalike.executors.faces import FaceDetector, FaceEncoder
for attempt in (lambda: FaceEncoder.fingerprint_of(FaceEncoder.Params()), lambda: FaceDetector({}).open(),
                lambda: FaceEncoder({}).open()):
    try:
        attempt()
    except ModelError as e:
        print("ModelError:", e)
    else:
        print("no error")
"""
    for module in ("dlib", "face_recognition_models"):
        out = subprocess.run([sys.executable, "-c", script, module], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines == ["ModelError: face search needs the faces extra: pip install 'lookalike[faces]'"] * 3


# --- detection and description -------------------------------------------------------------------


@pytest.mark.slow
def test_astronaut_and_its_edits_are_one_face_and_the_same_person(astronaut, encoder):
    edits = {
        "original": png(astronaut),
        "mirror": png(ImageOps.mirror(astronaut)),
        "half size": png(astronaut.resize((256, 256), Image.Resampling.LANCZOS)),  # a 45 px face: upsample 1 finds it
        "greyscale": png(astronaut.convert("L")),
        "jpeg 60": jpeg(astronaut, quality=60),
    }
    with FaceDetector(ONE_FACE) as detector:
        docs = run([detector, encoder], list(edits.values()))
    for name, doc in zip(edits, docs, strict=True):
        assert doc.error is None, name
        assert [c.kind for c in doc.chunks] == ["face"], name
        chunk = doc.chunks[0]
        assert chunk.tensor is None and chunk.embedding is not None
        assert chunk.embedding.shape == (DESCRIPTOR_DIM,) and chunk.embedding.dtype == np.float32
        assert 0.2 < np.linalg.norm(chunk.embedding) < 2  # dlib's descriptors are not unit vectors
    original = docs[0].chunks[0]
    assert near(original.bbox, ASTRONAUT_FACE)
    assert near(docs[1].chunks[0].bbox, (512 - 175 - 91, 76, 91, 91))  # mirrored about the vertical axis
    assert near(docs[2].chunks[0].bbox, (88, 38, 45, 45), tolerance=4)
    for name, doc in zip(edits, docs, strict=True):
        d = distance(doc.chunks[0].embedding, original.embedding)
        assert d < SAME_PERSON, f"{name}: {d:.3f}"


@pytest.mark.slow
def test_default_detector_also_finds_the_weak_patch_and_ranks_faces_by_area(astronaut, detector):
    # dlib's default threshold also fires, weakly, on the mission patch on her chest; min_score
    # drops it (the test above). The face is listed first: it is the larger of the two.
    (doc,) = run([detector], [png(astronaut)])
    boxes = [c.bbox for c in doc.chunks]
    assert len(boxes) == 2 and near(boxes[0], ASTRONAUT_FACE)
    assert boxes[0][2] * boxes[0][3] >= boxes[1][2] * boxes[1][3]
    assert all(c.tensor is not None and c.tensor.shape == (CHIP_SIZE, CHIP_SIZE, 3) for c in doc.chunks)
    assert all(c.tensor.dtype == np.uint8 for c in doc.chunks if c.tensor is not None)


@pytest.mark.slow
def test_same_person_is_closer_than_another_person(people, detector, encoder):
    names = OBAMA + BIDEN + ["32bit.png"]
    docs = run([detector, encoder], [people[n] for n in names])
    vectors = {}
    for name, doc in zip(names, docs, strict=True):
        assert doc.error is None, name
        assert len(doc.chunks) == 1, f"{name}: {[c.bbox for c in doc.chunks]}"
        vectors[name] = doc.chunks[0].embedding
    same = [distance(vectors[a], vectors[b]) for i, a in enumerate(OBAMA) for b in OBAMA[i + 1 :]]
    cross = [distance(vectors[a], vectors[b]) for a in OBAMA for b in BIDEN]
    assert max(same) < SAME_PERSON, same
    assert min(cross) > SAME_PERSON, cross
    assert max(same) < min(cross)
    # 32bit.png is obama2.jpg as an RGBA PNG: alpha onto white, then the same face.
    assert distance(vectors["32bit.png"], vectors["obama2.jpg"]) < 0.1


@pytest.mark.slow
def test_a_photo_without_a_face_gives_no_chunk_and_no_error(coffee, detector, encoder):
    (doc,) = run([detector, encoder], [png(coffee)])
    assert doc.error is None
    assert doc.chunks == []
    assert (doc.width, doc.height) == coffee.size
    assert doc.blob is None  # dropped once decoded


@pytest.mark.slow
def test_bbox_is_in_original_pixels(astronaut, encoder):
    # A 4000 x 3000 JPEG: decoded at half size (JPEG draft), detected on a 1600 px copy, the chip
    # cut from a full decode (the face is small there); the box must still land on the pasted face.
    canvas = Image.new("RGB", (4000, 3000), "white")
    canvas.paste(astronaut, (1500, 1000))
    small = Image.new("RGB", (900, 700), "white")
    small.paste(astronaut, (300, 150))
    with FaceDetector(ONE_FACE) as detector:
        big_doc, small_doc, alone = run([detector, encoder], [jpeg(canvas), png(small), png(astronaut)])
    assert (big_doc.width, big_doc.height) == (4000, 3000)
    x, y, w, h = ASTRONAUT_FACE
    assert [c.bbox for c in big_doc.chunks] and near(big_doc.chunks[0].bbox, (1500 + x, 1000 + y, w, h))
    assert [c.bbox for c in small_doc.chunks] and near(small_doc.chunks[0].bbox, (300 + x, 150 + y, w, h))
    for doc in (big_doc, small_doc):
        assert distance(doc.chunks[0].embedding, alone.chunks[0].embedding) < 0.25


@pytest.mark.slow
def test_bbox_follows_exif_orientation(astronaut, detector):
    # Stored on its side with EXIF orientation 6 ("rotate 90 clockwise to display"): width and
    # height, and the box, are those of the image as displayed.
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = astronaut.crop((0, 0, 512, 400)).transpose(Image.Transpose.ROTATE_90)
    (doc,) = run([detector], [jpeg(stored, exif=exif.tobytes())])
    assert (doc.width, doc.height) == (512, 400)
    assert near(doc.chunks[0].bbox, ASTRONAUT_FACE)


@pytest.mark.slow
def test_min_face_ignores_small_faces(astronaut):
    with FaceDetector({**ONE_FACE, "min_face": 60}) as detector:
        big, half = run([detector], [png(astronaut), png(astronaut.resize((256, 256)))])
    assert len(big.chunks) == 1 and half.chunks == [] and half.error is None


# --- the query side ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_faces(astronaut) -> bytes:
    """The astronaut at 60% on the left and at full size on the right, on white."""
    canvas = Image.new("RGB", (900, 560), "white")
    canvas.paste(astronaut.resize((307, 307), Image.Resampling.LANCZOS), (20, 120))
    canvas.paste(astronaut, (380, 20))
    return png(canvas)


@pytest.mark.slow
def test_query_lists_every_face_and_keeps_the_chosen_one(two_faces, coffee, encoder):
    x, y, w, h = ASTRONAUT_FACE
    with FaceDetector(ONE_FACE) as detector:
        (default,) = run([detector, encoder], [two_faces], "search")
        (second,) = run([detector, encoder], [two_faces], "search", face=1)
        (first,) = run([detector, encoder], [two_faces], "search", face=0)
        (missing,) = run([detector, encoder], [two_faces], "search", face=5)
        (faceless,) = run([detector, encoder], [png(coffee)], "search")

    faces = default.query_info["faces"]
    assert len(faces) == 2
    assert near(tuple(faces[0]), (380 + x, 20 + y, w, h))  # the larger face first
    assert near(tuple(faces[1]), (20 + round(x * 0.6), 120 + round(y * 0.6), round(w * 0.6), round(h * 0.6)))
    assert faces[0][2] * faces[0][3] > faces[1][2] * faces[1][3]

    for doc, n in ((default, 0), (first, 0), (second, 1)):
        assert doc.error is None
        assert doc.query_info["faces"] == faces
        assert [c.bbox for c in doc.chunks] == [tuple(faces[n])]
        assert doc.chunks[0].embedding is not None and doc.chunks[0].tensor is None
    assert distance(first.chunks[0].embedding, second.chunks[0].embedding) < SAME_PERSON

    assert missing.error == "face 5 asked for, but the image has 2 faces"
    assert missing.error_reason == "no such face" and missing.chunks == []
    assert faceless.error == "no face found in the query image" and faceless.error_reason == "no face"
    assert faceless.query_info["faces"] == []


@pytest.mark.slow
def test_index_ignores_the_face_parameter(two_faces):
    with FaceDetector(ONE_FACE) as detector:
        (doc,) = run([detector], [two_faces], "index", face=1)
    assert len(doc.chunks) == 2 and "faces" not in doc.query_info


# --- what the executors refuse or pass over -------------------------------------------------------


def test_bad_documents_fail_with_a_reason(detector):
    docs = [Document(id="none"), Document(id="junk", blob=b"not an image at all"), Document(id="empty", blob=b"")]
    request = Request("index", docs)
    detector.handle(request)
    reasons = {d.id: d.error_reason for d in request.docs}
    assert reasons == {"none": "no content", "junk": "not an image", "empty": "empty file"}


def test_documents_that_arrived_encoded_pass_through(detector, encoder):
    vector = np.arange(DESCRIPTOR_DIM, dtype=np.float32)
    doc = Document(id="stored", chunks=[Chunk(kind="face", bbox=(1, 2, 3, 4), embedding=vector)])
    request = Request("search", [doc])
    detector.handle(request)
    encoder.handle(request)
    assert doc.error is None and "faces" not in doc.query_info
    assert len(doc.chunks) == 1 and doc.chunks[0].embedding is vector


def test_encoder_refuses_tensors_that_are_not_face_chips(encoder):
    wrong = Document(id="wrong", chunks=[Chunk(kind="whole", tensor=np.zeros((3, 224, 224), np.float32))])
    request = Request("index", [wrong])
    encoder.handle(request)
    assert wrong.error_reason == "not a face chip" and "FaceDetector" in (wrong.error or "")
    assert wrong.chunks[0].embedding is None


@pytest.mark.slow
def test_encoder_batches_give_the_same_descriptors(astronaut):
    model = FaceModel()
    rgb = np.asarray(astronaut)
    chips = model.chips(rgb, [f.rect for f in model.locate(rgb, upsample=1)])
    assert len(chips) == 2
    together = model.describe(chips)
    alone = np.concatenate([model.describe([c]) for c in chips])
    assert together.shape == (2, DESCRIPTOR_DIM) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert model.describe([]).shape == (0, DESCRIPTOR_DIM)
    with pytest.raises(ValueError, match="150x150x3 uint8"):
        model.describe([np.zeros((100, 100, 3), np.uint8)])
