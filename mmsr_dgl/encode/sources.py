"""What `encode` reads besides the items file (`data.readers.read_items_file`): one image per item, with bad input
reported."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
IMAGE_SIZE = 224  # the image encoder's input side
MIN_SIDE = 8  # a smaller image (a 1x1 placeholder, say) holds no picture of the item
MAX_PIXELS = 120_000_000  # larger images are refused unread: one decoded image stays under 0.5 GB


def find_images(folder: Path, ids: list[str], asins: list[str] | None) -> list[Path | None]:
    """Each item's image file in `folder`, named by its asin or else its item_id (None: no image)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of images")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, []).append(path)
    found = []
    for asin, item in zip(asins or [None] * len(ids), ids):
        paths = by_stem.get(asin) or by_stem.get(item) or [None]
        if len(paths) > 1:
            raise UserError(
                f"{folder}: item {item} has {len(paths)} images ({', '.join(p.name for p in paths)}); keep one"
            )
        found.append(paths[0])
    return found


def load_image(path: Path) -> tuple[np.ndarray | None, str]:
    """uint8 [224, 224, 3]: the image fitted inside the square on white (first frame of an animation, transparency
    on white, EXIF orientation applied), or None and why it cannot be used."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # more than MAX_PIXELS
            with Image.open(path) as image:
                width, height = image.size
                if min(width, height) < MIN_SIDE:
                    return None, f"too small ({width}x{height})"
                image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode at a reduced scale
                image.load()  # the first frame of an animation
                if image.mode in ("1", "P", "PA"):
                    image = image.convert("RGBA")
                elif image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16-bit or float: to 8-bit
                    pixels = np.asarray(image, dtype=np.float64)
                    span = max(pixels.max() - pixels.min(), 1e-12)
                    image = Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8), "L")
                image.thumbnail((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)  # small before anything else
                image = ImageOps.exif_transpose(image).convert("RGBA")
    except UnidentifiedImageError:
        return None, "not an image file"
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None, f"too large (over {MAX_PIXELS:,} pixels)"
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        return None, f"corrupt or truncated image ({err})"
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    canvas = Image.new("RGBA", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255, 255))
    canvas.alpha_composite(image, ((IMAGE_SIZE - image.width) // 2, (IMAGE_SIZE - image.height) // 2))
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8), ""
