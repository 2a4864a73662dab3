import io

import numpy as np
import pytest
from PIL import Image

from featx.decode import DecodeError, DecodeSettings, decode_bytes


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


SMALL = DecodeSettings(size=8)


def _palette_red() -> Image.Image:
    im = Image.new("P", (20, 10))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 20, 10))
    return im


@pytest.mark.parametrize("image, fmt, rgb", [
    (Image.new("L", (20, 10), 100), "PNG", (100, 100, 100)),
    (Image.new("1", (20, 10), 1), "PNG", (255, 255, 255)),
    (_palette_red(), "PNG", (255, 0, 0)),
    (Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
    (Image.new("I;16", (20, 10), 65535), "PNG", (255, 255, 255)),
    (Image.new("RGB", (20, 10), (10, 200, 30)), "BMP", (10, 200, 30)),
    (Image.new("RGB", (20, 10), (10, 200, 30)), "WEBP", (10, 200, 30)),
    (Image.new("RGB", (20, 10), (255, 0, 0)), "GIF", (255, 0, 0)),
    (Image.new("LA", (20, 10), (100, 255)), "PNG", (100, 100, 100)),
    (Image.new("RGBA", (20, 10), (10, 20, 30, 255)), "PNG", (10, 20, 30)),
    (Image.new("F", (20, 10), 100.0), "TIFF", (100, 100, 100)),
], ids=["L", "1", "P", "CMYK", "I;16", "RGB-BMP", "RGB-WEBP", "GIF", "LA", "RGBA", "F"])
def test_every_mode_becomes_its_rgb_colour(image, fmt, rgb):
    out = decode_bytes(encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {})), SMALL)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert np.all(np.abs(out.astype(int) - np.array(rgb)) <= 2), out[0, 0]


def test_decoding_leaves_the_warnings_filters_alone():
    import warnings

    before = list(warnings.filters)
    big = encode(Image.new("L", (200, 200)), "PNG")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(big, DecodeSettings(size=8, max_pixels=100))
    assert warnings.filters == before


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.full((10, 10), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    out = decode_bytes(encode(Image.fromarray(arr), "PNG"), SMALL)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_transparency_is_composited_on_white():
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    out = decode_bytes(encode(im, "PNG"), SMALL)
    assert np.all(out == 255)


def test_exif_orientation_is_applied():
    # A 20x10 image, left half black and right half white, stored with "rotate 90 CW" (6).
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, 10:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(arr), "JPEG", exif=exif, quality=100)
    out = decode_bytes(data, DecodeSettings(size=20))
    # After rotating 90 degrees clockwise the white half is at the bottom.
    assert out[:8].mean() < 40 and out[12:].mean() > 215


def test_squash_and_crop_differ_on_wide_images():
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :10] = 255  # white left third
    data = encode(Image.fromarray(arr), "PNG")
    squash = decode_bytes(data, DecodeSettings(size=30, resize="squash"))
    crop = decode_bytes(data, DecodeSettings(size=30, resize="crop"))
    assert squash[:, :5].mean() > 240  # the white third survives a stretch
    assert crop.mean() < 10  # and is cut away by a centre crop


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "empty file"), (b"this is not an image", "not an image"),
     (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "truncated")],
    ids=["empty", "text", "truncated-jpeg"],
)
def test_bad_bytes_raise_decode_error_with_reason(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data, SMALL)


def test_decompression_bomb_guard():
    data = encode(Image.new("L", (300, 300)), "PNG")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(data, DecodeSettings(size=8, max_pixels=300 * 299))
    assert decode_bytes(data, DecodeSettings(size=8, max_pixels=300 * 300)).shape == (8, 8, 3)
