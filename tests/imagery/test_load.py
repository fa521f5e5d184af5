import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from imagery import ImageError, load_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_accepts_path_bytes_and_pil(tmp_path, airplane_jpg):
    path = tmp_path / "a.jpg"
    path.write_bytes(airplane_jpg)
    from_path, from_bytes = load_image(path), load_image(airplane_jpg)
    from_pil = load_image(Image.open(io.BytesIO(airplane_jpg)))
    assert from_path.mode == from_bytes.mode == from_pil.mode == "RGB"
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert np.array_equal(np.asarray(from_path), np.asarray(from_pil))


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "1", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (40, 30))
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F") else "PNG"
    out = load_image(_encode(image, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_transparent_pixels_flatten_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(_encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_data_is_stretched_not_clipped():
    ramp = np.tile(np.linspace(1000, 3000, 64, dtype=np.uint16), (8, 1))
    out = np.asarray(load_image(_encode(Image.fromarray(ramp), "PNG")))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255  # not all-black as a naive convert would give


def test_multiband_tiff_keeps_first_three_bands():
    bands = np.zeros((6, 16, 16), dtype=np.uint16)
    bands[0] = np.linspace(0, 4000, 16, dtype=np.uint16)  # only band 1 (red) carries signal
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, bands)
    out = np.asarray(load_image(buffer.getvalue()))
    assert out.shape == (16, 16, 3)
    assert out[..., 0].max() == 255 and out[..., 1].max() == 0 and out[..., 2].max() == 0


def test_huge_image_is_downscaled_under_the_cap():
    big = _encode(Image.new("RGB", (10_000, 10_000), (10, 200, 30)), "JPEG")
    out = load_image(big, max_pixels=512 * 512)
    assert out.width * out.height <= 512 * 512
    assert out.size == (512, 512)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "文件为空"),
        (b"this is not an image at all", "不是可识别的图像"),
        (b"%PDF-1.4 fake", "不是可识别的图像"),
    ],
)
def test_refuses_non_images_with_a_clear_message(data, words):
    with pytest.raises(ImageError, match=words):
        load_image(data)


def test_refuses_truncated_jpeg(airplane_jpg):
    with pytest.raises(ImageError, match="损坏或不完整"):
        load_image(airplane_jpg[: len(airplane_jpg) // 2])


def test_refuses_decompression_bomb():
    bomb = _encode(Image.new("1", (20_000, 20_000)), "PNG")  # ~50 KB file declaring 400 MP
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="解压炸弹"):
        load_image(bomb)
