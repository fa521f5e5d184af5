"""Imagery: the one home for reading remote-sensing images, below storage, the model layer, bot, server and UI.

It imports nothing from the project. `imagery.fetch` turns a data: / file:// / http(s) URL into bytes (local files
only under an allowed directory); `imagery.load` turns any input (path, bytes, file, PIL image) into a safe RGB
image; `imagery.probe` reads any file's header without decoding (TIFFs through rasterio, the rest through Pillow);
`imagery.header` checks a header against the pixel limit and its decode budget (width x height x bands x bytes per
sample), raising `ImageTooLarge`; `imagery.geotiff` reads every TIFF a remote-sensing user has (rasterio / GDAL),
checking first; `imagery.tiles` reads large scenes tile by tile. See docs/imagery.md.

    from imagery import load_image, ImageError
    image = load_image(Path("scene.tif").read_bytes(), max_pixels=1024 * 1024, bands=(4, 3, 2))
"""

from imagery.errors import ImageError
from imagery.header import MAX_DECLARED_PIXELS, ImageHeader, ImageTooLarge
from imagery.load import DEFAULT_MAX_PIXELS, ImageSource, downscale, image_bytes, load_image, to_rgb
from imagery.probe import probe, probe_checked

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "ImageHeader", "ImageSource", "ImageTooLarge", "MAX_DECLARED_PIXELS",
           "downscale", "image_bytes", "load_image", "probe", "probe_checked", "to_rgb"]
