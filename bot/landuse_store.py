"""A land-use map kept with its conversation, so reopening the conversation shows it without recomputing.

Storage is additive, in what a conversation already has: the map's JSON (`LandUseMap.to_dict`), the scene's
downscaled view and the overlay as content-addressed images, all named in the conversation's settings under
"landuse" (generation settings ignore unknown keys); the chat gets a user turn "分块分析 NAME" and an assistant turn
with the summary and the overlay image, like any stored turn.

    run = run_analysis(service, conversation_id, Path("scene.tif"), classifier, lang="zh")   # analyse + store
    stored = load_map(service.store, conversation_id)        # StoredMap(result, view, overlay, source) or None
    answer = follow_up(service.store, conversation_id, "哪里有储罐？")   # text + highlight image, or None
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.landuse import LandUseMap, analyze_scene, answer_from_map
from bot.landuse_export import png_bytes, render_overlay
from imagery.probe import probe
from imagery.tiles import SceneSource, open_scene
from model_adapter.scene_classifier import SceneClassifierError
from storage import ConversationStore, ImageRef

SETTINGS_KEY = "landuse"
VIEW_PIXELS = 768 * 768


@dataclass
class StoredMap:
    result: LandUseMap
    view: ImageRef  # the scene downscaled, without colours
    overlay: ImageRef
    source: str | None  # the scene's path when it was a local file (crops of a clicked tile read it)


@dataclass
class MapAnswer:
    text: str
    highlight: Image.Image | None  # the overlay with the asked class highlighted (where-questions)
    cls: str | None


def store_map(store: ConversationStore, conversation_id: str, result: LandUseMap, view: Image.Image,
              source: SceneSource | None, lang: str = "zh") -> tuple[StoredMap, str]:
    """Store the map with the conversation: images, settings entry, and the two chat turns. Returns the stored
    map and the summary text posted."""
    overlay = render_overlay(view, result, lang=lang)
    view_ref = store.add_image(png_bytes(view), original_name=f"{result.source_name or 'scene'}-view.png")
    overlay_ref = store.add_image(png_bytes(overlay), original_name=f"{result.source_name or 'scene'}-landuse.png")
    path = str(Path(source).resolve()) if isinstance(source, (str, Path)) else None
    conv = store.get(conversation_id)
    settings = {**conv.settings, SETTINGS_KEY: {
        "map": result.to_dict(), "view": view_ref.sha256, "overlay": overlay_ref.sha256, "source": path,
    }}
    store.update_settings(conversation_id, settings)
    summary = result.summary(lang)
    store.append_message(conversation_id, "user", f"分块分析 (tile analysis) {result.source_name}".strip(), [view_ref])
    store.append_message(conversation_id, "assistant", summary, [overlay_ref],
                         latency_ms=round(result.seconds * 1000))
    if not conv.title:
        store.rename(conversation_id, f"分块分析 {result.source_name}".strip())
    return StoredMap(result, view_ref, overlay_ref, path), summary


def load_map(store: ConversationStore, conversation_id: str) -> StoredMap | None:
    """The map stored with a conversation, or None."""
    entry = store.get(conversation_id).settings.get(SETTINGS_KEY)
    if not entry:
        return None
    refs = {}
    for name in ("view", "overlay"):
        path = next(iter(store.images.root.glob(f"{entry[name]}.*")), None)
        if path is None:
            return None  # its images were removed (conversation partly deleted): treat as no map
        header = probe(path.read_bytes())
        refs[name] = ImageRef(entry[name], path.name, path, header.width, header.height)
    return StoredMap(LandUseMap.from_dict(entry["map"]), refs["view"], refs["overlay"], entry.get("source"))


def run_analysis(store: ConversationStore, conversation_id: str, source: SceneSource, classifier,
                 gsd: float | None = None, bands: Sequence[int] | str | None = None, lang: str = "zh",
                 progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
                 source_name: str = "") -> tuple[StoredMap, str]:
    """Analyse a scene and store the map with the conversation (a cancelled run stores what finished).
    Raises ImageError before anything is stored when the scene cannot be read."""
    name = source_name or (Path(source).name if isinstance(source, (str, Path)) else "")
    with open_scene(source, bands) as scene:
        view = scene.overview(VIEW_PIXELS)
    result = analyze_scene(source, classifier, gsd=gsd, bands=bands, progress=progress, cancel=cancel,
                           source_name=name)
    return store_map(store, conversation_id, result, view, source, lang)


def follow_up(store: ConversationStore, conversation_id: str, text: str, lang: str = "zh") -> MapAnswer | None:
    """Answer a where / area question from the stored map ("哪里有储罐？", "港口占多大面积？"); None when the
    conversation has no map or the question is not one of those."""
    stored = load_map(store, conversation_id)
    if stored is None:
        return None
    answered = answer_from_map(stored.result, text, lang)
    if answered is None:
        return None
    answer, cls = answered
    highlight = None
    if cls is not None:
        with Image.open(stored.view.path) as view:
            highlight = render_overlay(view.convert("RGB"), stored.result, only=cls, lang=lang)
    return MapAnswer(answer, highlight, cls)


def follow_up_turn(store: ConversationStore, conversation_id: str, text: str, lang: str = "zh") -> MapAnswer | None:
    """`follow_up`, stored as a turn: the question, then the answer with its highlight image (if any). None (and
    nothing stored) when the conversation has no map or the question is not a where / area one."""
    answer = follow_up(store, conversation_id, text, lang)
    if answer is None:
        return None
    store.append_message(conversation_id, "user", text.strip())
    images = []
    if answer.highlight is not None:
        images = [store.add_image(png_bytes(answer.highlight), original_name=f"highlight-{answer.cls}.png")]
    store.append_message(conversation_id, "assistant", answer.text, images)
    return answer


AGENT_KEY = "landuse_agent"


def agent_map_text(store: ConversationStore, conversation_id: str, scene_key: str, scene_path: Path, classifier,
                   gsd: float | None = None, question: str = "", lang: str = "zh") -> str:
    """What the agent's land-use tool returns: the summary of the map of the conversation's current scene
    (computed once per scene and kept in the settings under "landuse_agent", JSON only), and, for a where / area
    question, the answer from the map."""
    entry = store.get(conversation_id).settings.get(AGENT_KEY) or {}
    if entry.get("scene") == scene_key:
        result = LandUseMap.from_dict(entry["map"])
    else:
        result = analyze_scene(scene_path, classifier, gsd=gsd, source_name=scene_path.name)
        conv = store.get(conversation_id)
        store.update_settings(conversation_id, {**conv.settings, AGENT_KEY: {"scene": scene_key,
                                                                             "map": result.to_dict()}})
    text = result.summary(lang)
    answered = answer_from_map(result, question, lang) if question else None
    return text + ("\n" + answered[0] if answered else "")


_CLASSIFIERS: dict[int, object] = {}
_CLASSIFIERS_LOCK = threading.Lock()


def classifier_for(backend):
    """The scene classifier for a chat backend, made once per backend: its own mini's vision encoder when it is a
    mini, else the shipped mini's (see `SceneClassifier.from_backend`)."""
    from model_adapter.scene_classifier import SceneClassifier

    with _CLASSIFIERS_LOCK:
        if id(backend) not in _CLASSIFIERS:
            _CLASSIFIERS[id(backend)] = SceneClassifier.from_backend(backend)
        return _CLASSIFIERS[id(backend)]


def export_files(stored: StoredMap, directory: str | Path, stem: str = "landuse") -> list[Path]:
    """Overlay PNG, GeoJSON of the tiles and the classified GeoTIFF of a stored map, written into `directory`."""
    from bot.landuse_export import write_geojson, write_geotiff

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    overlay = directory / f"{stem}.png"
    overlay.write_bytes(stored.overlay.path.read_bytes())
    return [overlay, write_geojson(stored.result, directory / f"{stem}.geojson"),
            write_geotiff(stored.result, directory / f"{stem}.tif")]


def tile_crop(stored: StoredMap, x: float, y: float, view_coords: bool = True,
              lang: str = "zh") -> tuple[Image.Image, str] | None:
    """The tile under a click: (crop, caption naming its row and column). `x, y` are on the stored view (or scene
    pixels with view_coords=False). The crop comes from the scene at full resolution when its file is still there, else from
    the stored view."""
    result = stored.result
    scale = result.width / stored.view.width if view_coords else 1.0
    tile = result.tile_at(x * scale, y * scale)
    if tile is None:
        return None
    caption = (f"第{tile.row + 1}行第{tile.col + 1}列" if lang == "zh" else f"row {tile.row + 1}, column {tile.col + 1}")
    if stored.source and Path(stored.source).is_file():
        with open_scene(stored.source, result.bands) as scene:
            return scene.crop(tile.window), caption
    bx, by, bw, bh = tile.window
    inv = stored.view.width / result.width
    with Image.open(stored.view.path) as view:
        box = (int(bx * inv), int(by * inv), max(int(bx * inv) + 1, round((bx + bw) * inv)),
               max(int(by * inv) + 1, round((by + bh) * inv)))
        return view.convert("RGB").crop(box), caption


__all__ = ["MapAnswer", "SceneClassifierError", "StoredMap", "agent_map_text", "classifier_for", "export_files",
           "follow_up", "follow_up_turn", "load_map", "run_analysis", "store_map", "tile_crop", "SETTINGS_KEY"]
