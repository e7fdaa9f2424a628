"""The returns classifier: transforms, architectures, ImageNet weights, training, saving, the photo-folder loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kronkers_ml.core import DataContractError
from kronkers_ml.returns.data import CATEGORIES, load_fashion_mnist, load_image_folder
from kronkers_ml.returns.model import (IMAGENET_MEAN, IMAGENET_STD, ReturnsClassifier, augment_batch,
                                       build_classifier, lite0_imagenet_state_dict, load_classifier,
                                       load_pretrained, save_classifier, to_tensor_batch, train_classifier)
from kronkers_ml.returns import model as returns_model

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def photos() -> list[Image.Image]:
    "Images of different sizes and colour modes, as uploads arrive."
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L"),
            Image.fromarray(rng.integers(0, 255, (120, 80, 3), dtype=np.uint8), "RGB"),
            Image.fromarray(rng.integers(0, 255, (33, 47, 4), dtype=np.uint8), "RGBA"),
            Image.new("P", (64, 64), 3), Image.new("CMYK", (10, 300), (10, 20, 30, 0))]


def test_interface_names():
    assert returns_model.CATEGORIES == ["tops", "shirts", "casual_shoes", "handbags", "boots"]


def test_eval_transform_gives_normalised_rgb_squares_for_any_size_and_mode():
    x = to_tensor_batch(photos(), 40)
    assert x.shape == (5, 3, 40, 40) and x.dtype == torch.float32
    white = to_tensor_batch([Image.new("L", (7, 9), 255)], 16)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(white[0, :, 5, 5], expected, atol=1e-5)


def test_augmentation_is_seeded_and_keeps_the_shape():
    x = to_tensor_batch(photos(), 24)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(a, augment_batch(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("architecture", ["efficientnet_b0", "efficientnet_lite0"])
def test_models_give_one_logit_per_class_on_tiny_inputs(architecture):
    model = build_classifier(architecture, n_classes=5).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
        assert model(torch.randn(1, 3, 57, 41)).shape == (1, 5)


def test_every_imagenet_tensor_of_lite0_loads():
    state = lite0_imagenet_state_dict()
    model = build_classifier("efficientnet_lite0", n_classes=5)
    report = load_pretrained(model, state)
    assert report["unexpected"] == []
    assert sorted(report["missing"]) == ["_fc.bias", "_fc.weight"]
    assert len(report["loaded"]) == len(state) - 2   # all but the 1000-class head
    own = model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in report["loaded"])
    pretrained = build_classifier("efficientnet_lite0", pretrained=True)
    assert torch.equal(pretrained._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_b0_takes_every_lite0_tensor_and_keeps_fresh_squeeze_excitation():
    state = lite0_imagenet_state_dict()
    report = load_pretrained(build_classifier("efficientnet_b0"), state)
    assert report["unexpected"] == []
    assert all("_se_" in k or k.startswith("_fc.") for k in report["missing"])


def test_two_training_steps_lower_the_loss():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (10, 28, 28), dtype=np.uint8)
    labels = np.arange(10) % 5
    model = build_classifier("efficientnet_lite0", pretrained=True, dropout=0.0, drop_connect_rate=0.0, seed=1)
    x, y = to_tensor_batch(images, 32), torch.as_tensor(labels)

    def loss() -> float:
        model.train()  # batch statistics, no dropout: the loss of the same batch, deterministic
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = loss()
    history = train_classifier(model, images, labels, 32, epochs=2, batch_size=10, lr=1e-3, augment=False,
                               label_smoothing=0.0, seed=1, threads=1, progress=False)
    assert history["steps"] == 2 and len(history["step_loss"]) == 2
    assert loss() < before


def test_save_and_load_give_identical_predictions(tmp_path):
    model = build_classifier("efficientnet_b0", n_classes=5, seed=2)
    with torch.no_grad():
        model._fc.bias.copy_(torch.linspace(-1, 1, 5))   # an untrained net's logits are near zero: break the tie
    path = tmp_path / "returns" / "model.pt"
    version = save_classifier(model, path, image_size=32, epochs=0)
    loaded = load_classifier(path, device="cpu")
    assert isinstance(loaded, ReturnsClassifier)
    assert loaded.version == version and loaded.categories == CATEGORIES and loaded.image_size == 32
    names, conf = loaded.predict(photos())
    names0, conf0 = ReturnsClassifier(model, CATEGORIES, 32, device="cpu").predict(photos())
    assert names == names0 and np.array_equal(conf, conf0)
    assert all(n in CATEGORIES for n in names) and conf.shape == (5,) and ((conf > 0.2) & (conf <= 1)).all()
    assert save_classifier(loaded, tmp_path / "again.pt") == version   # the version is a content hash
    model._fc.bias.data += 1
    assert save_classifier(model, tmp_path / "changed.pt", image_size=32, epochs=0) != version
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]   # no temporary file left behind


def test_a_file_that_is_not_a_classifier_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a returns classifier"):
        load_classifier(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_classifier(tmp_path / "missing.pt")


def write_photo_folder(root: Path) -> None:
    "Two photos of different sizes and modes per category, PNG and JPEG."
    rng = np.random.default_rng(0)
    for k, cat in enumerate(CATEGORIES):
        (root / cat).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (30 + k, 50), dtype=np.uint8), "L").save(root / cat / "grey.png")
        Image.fromarray(rng.integers(0, 255, (200, 90 + k, 3), dtype=np.uint8)).save(root / cat / "photo.JPG")
    Image.new("RGBA", (64, 40), (1, 2, 3, 100)).save(root / "boots" / "alpha.png")
    Image.new("P", (12, 12), 7).save(root / "tops" / "palette.png")
    Image.new("CMYK", (40, 40), (0, 50, 100, 0)).save(root / "handbags" / "cmyk.jpeg")


def test_photo_folder_loads_any_size_and_mode(tmp_path):
    write_photo_folder(tmp_path)
    (tmp_path / "tops" / "notes.txt").write_text("ignored: not an image suffix")
    images, labels, paths = load_image_folder(tmp_path, 48)
    assert images.shape == (13, 48, 48, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [3, 2, 2, 3, 3]
    assert "boots/alpha.png" in paths and "handbags/cmyk.jpeg" in paths


def test_photo_folder_errors_name_the_file_or_folder(tmp_path):
    write_photo_folder(tmp_path)
    (tmp_path / "shirts" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataContractError, match=r"shirts/broken.jpg: not a readable image"):
        load_image_folder(tmp_path, 32)
    (tmp_path / "shirts" / "broken.jpg").unlink()
    (tmp_path / "watches").mkdir()
    with pytest.raises(DataContractError, match="unknown class folder.*watches"):
        load_image_folder(tmp_path, 32)
    (tmp_path / "watches").rmdir()
    for f in (tmp_path / "casual_shoes").iterdir():
        f.unlink()
    with pytest.raises(DataContractError, match="casual_shoes: no images for class 'casual_shoes'"):
        load_image_folder(tmp_path, 32)
    with pytest.raises(DataContractError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", 32)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed (make system-deps)")
def test_fashion_mnist_test_split_has_a_thousand_images_of_each_category():
    images, labels = load_fashion_mnist(FASHION_MNIST, "t10k")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 5
