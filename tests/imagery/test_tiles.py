"""imagery.tiles: windows at the training ground resolution, nodata marks, band choice and stretch, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from imagery.errors import ImageError
from imagery.tiles import TRAIN_TILE_PX, open_scene, resolve_box, split_box
from tests.mosaics import fixture_tiles, mosaic, write_geotiff


@pytest.fixture(scope="module")
def tiles():
    return fixture_tiles()


def test_projected_scene_tiles_follow_its_pixel_size(tmp_path, tiles):
    image = mosaic([["airplane", "harbor"], ["forest", "beach"]], tiles)
    with open_scene(write_geotiff(tmp_path / "a.tif", image, gsd=0.3)) as scene:
        assert scene.info.gsd_m == pytest.approx(0.3)
        grid = scene.grid()
        assert (grid.side, grid.rows, grid.cols) == (256, 2, 2)
        tile = scene.read_tile(grid, 1, 0)
        assert np.array_equal(tile.pixels, tiles["forest"]) and tile.valid > 0.99
    # the same pixels said to be 0.6 m: a tile is 128 px of the scene, read resampled to 256
    with open_scene(write_geotiff(tmp_path / "b.tif", image, gsd=0.6)) as scene:
        grid = scene.grid(gsd=5.0)  # ignored: the GeoTIFF knows its resolution
        assert (grid.side, grid.rows, grid.cols) == (128, 4, 4)
        assert scene.read_tile(grid, 0, 0).pixels.shape == (TRAIN_TILE_PX, TRAIN_TILE_PX, 3)


def test_without_georeference_the_gsd_parameter_sets_the_tile(tmp_path, tiles):
    path = write_geotiff(tmp_path / "plain.tif", mosaic([["airplane", "harbor", "beach"]], tiles), gsd=None)
    with open_scene(path) as scene:
        assert not scene.info.georeferenced and scene.info.gsd_m is None
        assert scene.grid().side == 256  # default: 256 px at native resolution
        assert scene.grid(gsd=0.15).side == 512
        with pytest.raises(ImageError, match="gsd"):
            scene.grid(gsd=-1)


def test_edge_cells_are_clipped_and_read_as_whole_tiles(tmp_path, tiles):
    image = mosaic([["airplane", "harbor"]], tiles)[:, : 256 + 100]  # 356 px wide
    with open_scene(write_geotiff(tmp_path / "edge.tif", image, nodata=None)) as scene:
        grid = scene.grid()
        assert grid.cols == 2 and grid.cell(0, 1) == (256, 0, 100, 256)
        assert grid.read_window(0, 1) == (100, 0, 256, 256)  # shifted inward
        assert scene.read_tile(grid, 0, 1).valid == pytest.approx(1.0)


def test_nodata_areas_are_marked(tmp_path, tiles):
    image = mosaic([["airplane", None]], tiles)
    image[:64, :256] = 0  # a quarter of the first tile without data
    with open_scene(write_geotiff(tmp_path / "nd.tif", image, nodata=0)) as scene:
        grid = scene.grid()
        assert scene.read_tile(grid, 0, 0).valid == pytest.approx(0.75, abs=0.01)
        assert scene.read_tile(grid, 0, 1).valid == 0.0


def test_thirteen_band_uint16_scene_uses_chosen_bands_with_one_stretch(tmp_path, tiles):
    rgb = mosaic([["harbor", "forest"]], tiles).transpose(2, 0, 1).astype(np.uint16) * 16 + 1000
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 5000, size=(13, *rgb.shape[1:]), dtype=np.uint16)
    bands[3], bands[2], bands[1] = rgb  # Sentinel-2 order: B4 red, B3 green, B2 blue
    path = write_geotiff(tmp_path / "s2.tif", None, bands=bands, nodata=None)
    with open_scene(path, bands="4,3,2") as scene:
        assert scene.info.count == 13 and scene.info.bands == (4, 3, 2)
        assert scene.stretch is not None and len(scene.stretch) == 3
        tile = scene.read_tile(scene.grid(), 0, 0).pixels
        # a linear stretch keeps the picture: strongly correlated with the original 8-bit tile
        assert np.corrcoef(tile.reshape(-1).astype(float), tiles["harbor"].reshape(-1).astype(float))[0, 1] > 0.98
    with pytest.raises(ImageError, match="13"):
        with open_scene(path, bands="14,3,2"):
            pass


def test_corrupt_and_missing_files_are_clear_messages(tmp_path, tiles):
    good = write_geotiff(tmp_path / "good.tif", mosaic([["airplane"]], tiles)).read_bytes()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(good[:400])
    with pytest.raises(ImageError, match="损坏"):
        with open_scene(corrupt) as scene:
            scene.read_tile(scene.grid(), 0, 0)
    with pytest.raises(ImageError, match="no such file"):
        with open_scene(tmp_path / "absent.tif"):
            pass
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageError, match="corrupt"):
        with open_scene(junk):
            pass


def test_reads_are_windows_never_the_whole_raster(tmp_path, tiles, monkeypatch):
    """Every read is a tile window or a decimated view bounded in pixels, whatever the scene's size."""
    from imagery.tiles import Scene

    image = np.tile(mosaic([["airplane", "harbor"], ["forest", "beach"]], tiles), (3, 3, 1))  # 1536 x 1536
    path = write_geotiff(tmp_path / "big.tif", image.astype(np.uint16) * 4, nodata=None)  # 16-bit: stretch read too
    reads = []
    original = Scene._read

    def recording(self, window, shape, resampling):
        reads.append((window, shape))
        return original(self, window, shape, resampling)

    monkeypatch.setattr(Scene, "_read", recording)
    monkeypatch.setattr("imagery.tiles.STATS_PIXELS", 256 * 256)  # so the decimated stats read is smaller too
    with open_scene(path) as scene:
        grid = scene.grid()
        for row, col in grid.cells():
            scene.read_tile(grid, row, col)
        scene.overview(max_pixels=128 * 128)
    assert len(reads) == 1 + 36 + 1  # stretch statistics, every tile once, the overview
    assert all(h * w <= 256 * 256 for _, (h, w) in reads)
    assert all(window is not None and window[2] * window[3] <= 256 * 256 for window, _ in reads[1:-1])


def test_scene_bytes_open_like_a_file(tmp_path, tiles):
    data = write_geotiff(tmp_path / "a.tif", mosaic([["airplane", "harbor"]], tiles)).read_bytes()
    with open_scene(data) as scene:
        assert scene.info.crs == "EPSG:32650" and scene.grid().cols == 2
        assert np.array_equal(scene.read_tile(scene.grid(), 0, 1).pixels, tiles["harbor"])


def test_agent_boxes_and_their_tile_grids():
    assert resolve_box([0, 0, 0.5, 0.5], 512, 256) == (0, 0, 256, 128)
    assert resolve_box([-10, 5, 600, 100], 512, 256) == (0, 5, 512, 100)
    with pytest.raises(ValueError, match="at least"):
        resolve_box([0, 0, 3, 3], 512, 512)
    assert [t[2] for t in split_box((0, 0, 512, 512), 256, 16)] == [
        (0, 0, 256, 256), (256, 0, 512, 256), (0, 256, 256, 512), (256, 256, 512, 512)]
    assert len(split_box((0, 0, 6000, 6000), 512, 16)) <= 16
    with pytest.raises(ValueError):
        split_box((0, 0, 512, 512), 256, 4, rows=3, cols=3)
