"""Scene labels from file names and the glossary / object vocabulary in vocabulary/."""

from vocabulary.glossary import GLOSSARY

from vocabulary.objects import OBJECTS

from vocabulary.scenes import RSICD_SCENES, UCM_SCENES, guess_scene_from_captions, scene, scene_of


def test_ucm_classes_follow_filename_numbering():
    assert len(UCM_SCENES) == 21 and list(UCM_SCENES) == sorted(UCM_SCENES)
    assert scene_of("ucm", "1.tif") == "agricultural"
    assert scene_of("ucm", "100.tif") == "agricultural"
    assert scene_of("ucm", "101.tif") == "airplane"
    assert scene_of("ucm", "1001.tif") == "harbor"
    assert scene_of("ucm", "2100.tif") == "tenniscourt"
    assert scene_of("ucm", "2101.tif") is None
    assert scene("ucm", "storagetanks").zh == "储罐"


def test_sydney_ranges_and_rsicd_prefixes():
    assert scene_of("sydney", "242.tif") == "residential"
    assert scene_of("sydney", "243.tif") == "airport"
    assert scene_of("sydney", "613.tif") == "runway"
    assert len(RSICD_SCENES) == 30
    assert scene_of("rsicd", "viaduct_99.jpg") == "viaduct"
    assert scene_of("rsicd", "00001.jpg") is None
    assert scene_of("unknown", "1.tif") is None


def test_glossary_and_objects():
    assert GLOSSARY["farmland"] == "农田" and GLOSSARY["overpass"] == "立交桥"
    assert OBJECTS["airplane"].in_en("Four airplanes are parked")
    assert not OBJECTS["playground"].in_en("two basketball playgrounds")
    assert OBJECTS["storage_tank"].in_zh("三个储罐")


def test_guess_scene_is_conservative():
    caps = ["a playground with a red track"] * 4 + ["buildings around"]
    assert guess_scene_from_captions(caps) == "playground"
    assert guess_scene_from_captions(["a playground", "a pond", "a school", "trees", "a road"]) is None


def test_unsupported_objects_flags_what_no_reference_mentions():
    from vocabulary.objects import unsupported_objects

    refs = ["Two airplanes are parked at the airport .", "两架飞机停在机场。"]
    assert unsupported_objects("图中有两架飞机和一个储罐。", refs) == ["storage_tank"]
    assert unsupported_objects("There are two airplanes.", refs) == []
    assert unsupported_objects("一条跑道和停车场。", ["a runway and a parking lot ."]) == []
