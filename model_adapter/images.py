"""Deprecated alias of `imagery.load` (and `imagery`), kept for one release: import from `imagery` instead.

    from imagery import load_image, ImageError, ImageSource, DEFAULT_MAX_PIXELS
"""

from imagery.load import (DEFAULT_MAX_PIXELS, MAX_DECLARED_PIXELS, TIFF_MAGIC, ImageError, ImageSource, ImageTooLarge,
                          downscale, image_bytes, load_image, to_rgb)

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "ImageSource", "ImageTooLarge", "MAX_DECLARED_PIXELS", "TIFF_MAGIC",
           "downscale", "image_bytes", "load_image", "to_rgb"]
