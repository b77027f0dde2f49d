"""Importing a folder of images (one sub-folder per class): pixels in [0, 1] shaped (N, C, H, W),
labels from the sorted class names, a seeded or given train/test split, and every bad folder
refused with a sentence. The images are tiny PNGs written with Pillow."""
import textwrap

import numpy as np
import pytest
import safetensors.torch
from PIL import Image

from engine import external
from engine.__main__ import main
from engine.experiment import load_dataset
from engine.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")


def gray(value: int, size=(4, 3)) -> Image.Image:
    """A grayscale image of one value, `size` = (width, height) as Pillow gives it."""
    return Image.new("L", size, value)


def write(folder, images: dict) -> None:
    """Write {relative path: image} under `folder`."""
    for name, image in images.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def test_grayscale_classes_become_one_channel_pixels_in_zero_one(tmp_path):
    write(tmp_path, {f"{label}/{i}.png": gray(value) for label, value in (("b", 255), ("a", 51))
                     for i in range(5)})
    arrays = external.read_data(str(tmp_path))
    x = np.concatenate([arrays.x_train, arrays.x_test])
    y = np.concatenate([arrays.y_train, arrays.y_test])
    assert x.shape == (10, 1, 3, 4) and x.dtype == np.float32
    assert np.allclose(x[y == 0], 51 / 255) and np.allclose(x[y == 1], 1.0)  # "a" sorts first


def test_the_split_holds_out_a_fifth_and_is_the_same_every_time(tmp_path):
    write(tmp_path, {f"c{i % 2}/{i}.png": gray(i * 10) for i in range(10)})
    first, second = external.read_data(str(tmp_path)), external.read_data(str(tmp_path))
    assert len(first.x_test) == 2 and len(first.x_train) == 8
    assert np.array_equal(first.x_test, second.x_test) and np.array_equal(first.y_train, second.y_train)


def test_colour_images_become_three_rgb_channels(tmp_path):
    write(tmp_path, {f"red/{i}.png": Image.new("RGB", (2, 2), (255, 0, 51)) for i in range(3)})
    write(tmp_path, {f"gray/{i}.png": gray(102, (2, 2)) for i in range(2)})
    arrays = external.read_data(str(tmp_path))
    x, y = np.concatenate([arrays.x_train, arrays.x_test]), np.concatenate([arrays.y_train, arrays.y_test])
    assert x.shape == (5, 3, 2, 2)
    assert np.allclose(x[y == 1][:, :, 0, 0], [1.0, 0.0, 0.2]) and np.allclose(x[y == 0], 0.4)


def test_train_and_test_sub_folders_keep_their_split(tmp_path):
    write(tmp_path, {"train/cat/1.png": gray(0), "train/cat/2.png": gray(0), "train/dog/1.png": gray(255),
                     "test/dog/1.png": gray(255)})
    arrays = external.read_data(str(tmp_path))
    assert list(arrays.y_train) == [0, 0, 1] and list(arrays.y_test) == [1]
    assert np.allclose(arrays.x_test, 1.0)


def test_an_image_of_another_size_is_named(tmp_path):
    write(tmp_path, {"a/1.png": gray(0), "a/2.png": gray(0), "b/odd.png": gray(0, (5, 5))})
    with pytest.raises(ValueError, match=r"most are 4x3 pixels, but .*odd\.png is 5x5"):
        external.read_data(str(tmp_path))


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    write(tmp_path, {"a/1.png": gray(0), "b/1.png": gray(0)})
    (tmp_path / "b" / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes\.txt is not an image"):
        external.read_data(str(tmp_path))


def test_a_broken_image_file_is_refused(tmp_path):
    write(tmp_path, {"a/1.png": gray(0), "b/1.png": gray(0)})
    (tmp_path / "b" / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(ValueError, match=r"broken\.png cannot be read as an image"):
        external.read_data(str(tmp_path))


def test_a_file_beside_the_class_folders_is_refused(tmp_path):
    write(tmp_path, {"a/1.png": gray(0), "b/1.png": gray(0), "loose.png": gray(0)})
    with pytest.raises(ValueError, match=r"one sub-folder per class .* also holds loose\.png"):
        external.read_data(str(tmp_path))


def test_a_link_out_of_the_folder_is_not_followed(tmp_path):
    outside, data = tmp_path / "outside", tmp_path / "data"
    write(outside, {"secret.png": gray(0)})
    write(data, {"a/1.png": gray(0), "b/1.png": gray(0)})
    (data / "b" / "2.png").symlink_to(outside / "secret.png")
    with pytest.raises(ValueError, match="leads out of the data folder"):
        external.read_data(str(data))


def test_a_link_inside_the_folder_is_read(tmp_path):
    write(tmp_path, {"a/1.png": gray(0), "b/1.png": gray(255)})
    (tmp_path / "b" / "2.png").symlink_to(tmp_path / "b" / "1.png")
    arrays = external.read_data(str(tmp_path))
    assert len(arrays.x_train) + len(arrays.x_test) == 3


CONV_MODEL = textwrap.dedent('''
    from torch import nn


    def make_net(classes=2):
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 1 * 2, classes))
''')


def test_an_image_folder_imports_as_a_run_with_image_shaped_inputs(tmp_path, capsys):
    (tmp_path / "net.py").write_text(CONV_MODEL)
    factory = f"{tmp_path / 'net.py'}:make_net"
    safetensors.torch.save_file(external.build_model(factory).state_dict(), str(tmp_path / "w.safetensors"))
    write(tmp_path / "images", {f"{c}/{i}.png": gray(40 * i) for c in ("no", "yes") for i in range(5)})
    store = tmp_path / "store"
    assert main(["--store", str(store), "import", "--model", factory, "--weights", str(tmp_path / "w.safetensors"),
                 "--data", str(tmp_path / "images")]) == 0
    run_id = RunStore(store).list()[0].id
    data = load_dataset(RunStore(store), run_id)
    assert data.input_shape == (1, 3, 4) and data.task == "classification" and len(data.x_test) == 2
