"""The land-use map on mosaics of UCM test tiles with known truth, through the shipped RemoteGLM-mini's scene head:
tile classes, km² shares, nodata skipped, exports reopened with rasterio / json, cancellation, follow-ups, storage
with the conversation (SQLite and PostgreSQL), bad input. Skipped while the shipped checkpoint is absent."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
import rasterio

from bot.landuse import LandUseMap, analyze_scene, answer_from_map, find_classes
from bot.landuse_export import to_geojson, write_geojson, write_geotiff
from bot.landuse_store import follow_up, load_map, run_analysis, tile_crop
from imagery.errors import ImageError
from settings import DEFAULT_MODEL_DIR
from storage import ConversationStore
from tests.mosaics import fixture_tiles, mosaic, write_geotiff as write_scene

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(),
                                reason="shipped mini model absent")
LAYOUT = [["airplane", "harbor", "storagetanks"],
          ["forest", "beach", "tenniscourt"],
          ["freeway", "denseresidential", None]]
TILE_KM2 = 256 * 256 * 0.3 * 0.3 / 1e6


@pytest.fixture(scope="module")
def classifier():
    from model_adapter.scene_classifier import SceneClassifier

    return SceneClassifier.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene") / "mosaic.tif", mosaic(LAYOUT))


@pytest.fixture(scope="module")
def result(scene, classifier) -> LandUseMap:
    return analyze_scene(scene, classifier, batch_size=4)


def test_tiles_of_a_mosaic_get_their_ucm_class_and_nodata_is_skipped(result):
    truth = {(r, c): key for r, row in enumerate(LAYOUT) for c, key in enumerate(row)}
    got = {(t.row, t.col): t for t in result.tiles}
    assert got[(2, 2)].status == "nodata" and got[(2, 2)].cls is None
    right = sum(got[k].cls == v for k, v in truth.items() if v is not None)
    assert right >= 7, [(k, got[k].cls, v) for k, v in truth.items()]
    assert result.complete and not result.cancelled and result.counts()["classified"] == 8


def test_shares_are_in_km2_for_a_projected_geotiff(result):
    shares = result.shares()
    assert sum(s.fraction for s in shares) == pytest.approx(1.0)
    assert sum(s.km2 for s in shares) == pytest.approx(8 * TILE_KM2, rel=0.01)
    zh, en = result.summary("zh"), result.summary("en")
    assert "平方公里" in zh and "1 块无数据已跳过" in zh and "km²" in en


def test_geojson_and_classified_geotiff_reopen_in_the_scene_crs(result, tmp_path):
    collection = json.loads(write_geojson(result, tmp_path / "m.geojson").read_text(encoding="utf-8"))
    assert collection["crs"] == "EPSG:32650" and len(collection["features"]) == 9
    first = next(f for f in collection["features"] if (f["properties"]["row"], f["properties"]["col"]) == (0, 1))
    ring = first["geometry"]["coordinates"][0]
    assert ring[0] == [500000.0 + 76.8, 4000000.0] and ring[2] == [500000.0 + 2 * 76.8, 4000000.0 - 76.8]
    assert first["properties"]["class"] == result.tiles[1].cls and 0 < first["properties"]["probability"] <= 1
    with rasterio.open(write_geotiff(result, tmp_path / "m.tif")) as ds:
        assert ds.crs.to_string() == "EPSG:32650" and (ds.width, ds.height, ds.count) == (3, 3, 1)
        assert ds.transform.a == pytest.approx(76.8) and ds.transform.c == pytest.approx(500000.0)
        grid = ds.read(1)
        assert grid[2, 2] == 0 and ds.nodata == 0
        assert result.classes[grid[0, 1] - 1] == result.tiles[1].cls
        assert ds.colormap(1)[int(grid[0, 0])][:3] != (0, 0, 0)


def test_scene_without_georeference_gives_percent_and_pixel_geojson(tmp_path, classifier):
    from PIL import Image

    path = tmp_path / "mosaic.png"
    Image.fromarray(mosaic([["harbor", "forest"]])).save(path)
    result = analyze_scene(path, classifier)
    assert result.transform is None and not result.georef_gsd
    assert all(s.km2 is None for s in result.shares())
    assert "平方公里" not in result.summary("zh")
    coords = to_geojson(result)["features"][1]["geometry"]["coordinates"][0]
    assert to_geojson(result)["crs"] is None and coords[0] == [256.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(write_geotiff(result, tmp_path / "plain.tif")) as ds:
            assert ds.crs is None and ds.read(1).shape == (1, 2)
    assert analyze_scene(path, classifier, gsd=0.15).tile_px == 512  # a larger tile at finer resolution


def test_thirteen_band_geotiff_is_classified_on_its_rgb_bands(tmp_path, classifier):
    rgb = mosaic([["harbor", "forest", "storagetanks"]]).transpose(2, 0, 1).astype(np.uint16) * 16
    bands = np.random.default_rng(1).integers(0, 4000, size=(13, *rgb.shape[1:]), dtype=np.uint16)
    bands[3], bands[2], bands[1] = rgb
    path = write_scene(tmp_path / "s2.tif", None, bands=bands, nodata=None)
    result = analyze_scene(path, classifier, bands="4,3,2")
    assert result.bands == [4, 3, 2]
    # the same three bands as a 3-band file: the band choice, not the other ten bands, decides
    alone = analyze_scene(write_scene(tmp_path / "rgb.tif", None, bands=rgb, nodata=None), classifier)
    assert [t.cls for t in result.tiles] == [t.cls for t in alone.tiles]
    # NOTE: the 2-98 % stretch of 16-bit data changes contrast; measured: storage tanks -> buildings, 2 of 3 right
    assert sum(t.cls == k for t, k in zip(result.tiles, ["harbor", "forest", "storagetanks"])) >= 2


def test_cancel_keeps_the_finished_tiles(scene, classifier):
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()  # stop after the first batch

    result = analyze_scene(scene, classifier, batch_size=2, progress=progress, cancel=cancel)
    counts = result.counts()
    assert result.cancelled and not result.complete and seen == [2]
    assert counts["classified"] == 2 and counts["pending"] == 7
    assert [t.status for t in result.tiles[:2]] == ["classified", "classified"]
    assert "已取消" in result.summary("zh")


def test_progress_reaches_the_total_when_the_last_tile_is_nodata(scene, classifier):
    seen = []
    analyze_scene(scene, classifier, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 9), (8, 9), (9, 9)]  # two batches of 4 classified tiles, then the nodata tile at the end


def test_where_and_area_follow_ups_answer_from_the_map(result):
    assert find_classes("哪里有储罐？") == ["storagetanks"] and find_classes("港口占多大面积？") == ["harbor"]
    answer, cls = answer_from_map(result, "哪里有储罐？", "zh")
    tanks = result.tiles_of("storagetanks")
    assert cls == "storagetanks" and f"{len(tanks)} 个分块" in answer and "第1行第3列" in answer
    answer, cls = answer_from_map(result, "港口占多大面积？", "zh")
    assert cls is None and "平方公里" in answer
    assert answer_from_map(result, "请描述这张图像", "zh") is None
    assert result.tile_at(300, 10).col == 1 and result.tile_at(-1, 0) is None


def test_map_is_stored_with_the_conversation_and_reopened_without_recomputing(database_url, tmp_path, scene,
                                                                              classifier):
    store = ConversationStore(database_url, tmp_path / "images")
    conv = store.create(settings={"temperature": 0.2})
    stored, summary = run_analysis(store, conv.id, scene, classifier)
    store.close()

    reopened = ConversationStore(database_url, tmp_path / "images")  # a new process, the same data
    view = reopened.get(conv.id)
    assert view.settings["temperature"] == 0.2  # existing settings kept
    assert [m.role for m in view.messages] == ["user", "assistant"]
    assert view.messages[1].text == summary and view.messages[1].images[0].path.exists()
    again = load_map(reopened, conv.id)
    assert again.result.to_dict() == stored.result.to_dict()
    answer = follow_up(reopened, conv.id, "哪里有储罐？")
    assert answer.cls == "storagetanks" and answer.highlight.width > again.view.width  # view + legend
    crop, caption = tile_crop(again, x=again.view.width * 0.5, y=5)  # the top-middle tile
    assert crop.size == (256, 256) and "第1行第2列" in caption
    reopened.close()


def test_unreadable_scene_is_a_message_and_stores_nothing(tmp_path, scene, classifier):
    store = ConversationStore(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "images")
    conv = store.create()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(scene.read_bytes()[:500])
    with pytest.raises(ImageError, match="损坏"):
        run_analysis(store, conv.id, corrupt, classifier)
    assert store.get(conv.id).messages == [] and "landuse" not in store.get(conv.id).settings
    store.close()
