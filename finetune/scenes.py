"""Deprecated alias of `vocabulary.scenes`, `vocabulary.glossary` and `vocabulary.objects`, kept for one release."""

from vocabulary.glossary import COLOURS, GLOSSARY, GLOSSARY_ALTERNATES, NUMBERS, ZH_DIGITS, glossary_variants
from vocabulary.objects import OBJECTS, ObjectTerm, objects_in, unsupported_objects
from vocabulary.scenes import (RSICD_SCENES, SCENES, SYDNEY_RANGES, SYDNEY_SCENES, UCM_SCENES, Scene,
                               guess_scene_from_captions, scene, scene_of)

__all__ = ["COLOURS", "GLOSSARY", "GLOSSARY_ALTERNATES", "NUMBERS", "ZH_DIGITS", "glossary_variants", "OBJECTS",
           "ObjectTerm", "objects_in", "unsupported_objects", "RSICD_SCENES", "SCENES", "SYDNEY_RANGES",
           "SYDNEY_SCENES", "UCM_SCENES", "Scene", "guess_scene_from_captions", "scene", "scene_of"]
