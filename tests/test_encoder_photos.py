"""The real model on real photographs (scikit-image's bundled ones)."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import BadInput, ModelError
from lookalike.models.imagenet import labels

from conftest import REPO

pytestmark = pytest.mark.slow

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def _edits(img: Image.Image) -> dict[str, bytes | Image.Image]:
    w, h = img.size
    crop = img.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95)))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=70)
    return {"resize75": img.resize((round(w * 0.75), round(h * 0.75))), "crop90": crop, "jpeg70": buf.getvalue()}


def test_labels_are_the_1000_imagenet_classes():
    names = labels()
    assert len(names) == 1000 and len(set(names)) >= 998
    assert names[281] == "tabby" and names[967] == "espresso" and names[985] == "daisy"


def test_tags_make_sense(encoder, photos):
    _, logits = encoder.encode([photos["chelsea"], photos["coffee"]])
    chelsea, coffee = encoder.tags(logits, k=5)
    assert CAT_CLASSES & {t.label for t in chelsea}, chelsea
    assert {"espresso", "cup", "coffee mug"} & {t.label for t in coffee}, coffee
    for row in (chelsea, coffee):
        probs = [t.probability for t in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_each_photo_is_closest_to_its_own_edits(encoder, photos):
    names = list(photos)
    originals, _ = encoder.encode([photos[n] for n in names])
    worst_same, best_different = 1.0, -1.0
    for i, name in enumerate(names):
        edited, _ = encoder.encode(list(_edits(photos[name]).values()))
        assert np.allclose(np.linalg.norm(edited, axis=1), 1.0, atol=1e-5)
        same = edited @ originals[i]
        worst_same = min(worst_same, float(same.min()))
        others = np.delete(originals, i, axis=0)
        best_different = max(best_different, float((edited @ others.T).max()))
    for a, b in itertools.combinations(range(len(names)), 2):
        best_different = max(best_different, float(originals[a] @ originals[b]))
    assert worst_same > best_different, (worst_same, best_different)
    assert worst_same > 0.8


def test_batching_does_not_change_results(encoder, photos, model_dir):
    from lookalike.models.encoder import EfficientNetEncoder

    images = list(photos.values())
    together, logits = encoder.encode(images)
    one_by_one = np.concatenate([encoder.encode([im])[0] for im in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    small_batches = EfficientNetEncoder(cache_dir=model_dir, threads=1, batch_size=2)
    assert small_batches.threads == 1
    np.testing.assert_allclose(small_batches.encode(images)[0], together, atol=1e-5)
    assert together.dtype == np.float32 and logits.shape == (len(images), 1000)


def test_a_bad_image_in_a_batch_is_named(encoder, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(BadInput, match="broken.jpg"):
        encoder.encode([photos["coffee"], bad])
    with pytest.raises(BadInput, match="N x 3 x 224 x 224"):
        encoder.encode(np.zeros((2, 3, 100, 100), np.float32))


def test_empty_input_gives_empty_output(encoder):
    emb, logits = encoder.encode([])
    assert emb.shape == (0, 1280) and logits.shape == (0, 1000)


def test_bad_settings_are_model_errors(model_dir):
    from lookalike.models.encoder import EfficientNetEncoder

    with pytest.raises(ModelError, match="threads"):
        EfficientNetEncoder(threads=0, cache_dir=model_dir)


def test_runs_with_torch_made_unimportable(model_dir, tmp_path):
    """No code path of encoding needs torch, even if some torch is installed beside us."""
    photo = tmp_path / "coffee.png"
    from skimage import data

    Image.fromarray(data.coffee()).save(photo)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "from lookalike.models.encoder import EfficientNetEncoder\n"
        f"enc = EfficientNetEncoder(cache_dir={str(model_dir)!r})\n"
        f"emb, logits = enc.encode([{str(photo)!r}])\n"
        "print(enc.tags(logits)[0][0].label)\n"
        "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "espresso"
