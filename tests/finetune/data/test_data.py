"""The conversation-JSONL builder (finetune/data/builder.py, finetune/data/tasks.py) on the miniature data root in fixtures."""

import json
from pathlib import Path

import pytest

from finetune import data as D
from vocabulary.datasets import data_root
from vocabulary.objects import OBJECTS
from finetune.data.tasks import ALL_TASKS, ImageRecord, absent_objects, stated_counts

MINI = Path(__file__).resolve().parents[2] / "fixtures" / "mini_data"
SHARED = data_root()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return D.build(D.BuildConfig(data_root=MINI, out=out, seed_paragraphs=True, require_images=False)), out


def test_load_captions_gives_refs_split_and_label():
    recs = {r.filename: r for r in D.load_captions(MINI, "ucm")}
    r = recs["192.tif"]
    assert r.split == "test" and r.label == "airplane" and r.image == "ucm/images/192.jpg"
    assert D.image_path("/data", r.image) == Path("/data/ucm/images/192.jpg")
    assert len(r.refs_en) == 5 and len(r.refs_zh) == 5 and "飞机" in r.refs_zh[0]
    rs = {r.filename: r for r in D.load_captions(MINI, "rsicd")}
    assert rs["00001.jpg"].label is None and rs["church_222.jpg"].split == "test"


def test_every_task_and_language_present(built):
    result, out = built
    tasks = {s["task"] for s in result.splits["train"]}
    assert set(ALL_TASKS) <= tasks
    assert {s["lang"] for s in result.splits["train"]} == {"zh", "en"}
    for split in D.SPLITS:
        rows = D.read_jsonl(out / f"{split}.jsonl")
        assert rows and all(r["split"] == split for r in rows)
        assert all(r["messages"][0]["role"] == "user" and r["messages"][-1]["role"] == "assistant" for r in rows)
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["describe_zh"]["train"]["zh"] > 0 and (out / "card.md").read_text().startswith("#")


def test_official_splits_kept_and_no_test_image_in_training(built):
    result, _ = built
    official = {}
    for ds in D.DATASETS:
        for im in json.loads((MINI / ds / "dataset.json").read_text())["images"]:
            stem = im["filename"].rsplit(".", 1)[0]
            official[f"{ds}/images/{stem}.jpg"] = im.get(D.SPLIT_FIELD[ds]) or im["split"]
    for split, samples in result.splits.items():
        assert all(official[s["image"]] == split for s in samples if s["image"])
    assert any(s["image"] is None for s in result.splits["train"])  # v2 upload requests carry no image
    assert not any(s["image"] is None for s in result.splits["test"])
    train = {s["image"] for s in result.splits["train"] if s["image"]}
    assert train.isdisjoint(s["image"] for s in result.splits["test"])
    assert train.isdisjoint(s["image"] for s in result.splits["val"])
    with pytest.raises(ValueError, match="test images also in train"):
        leak = dict(result.splits)
        leak["train"] = leak["train"] + leak["test"][:1]
        D.check_no_leak(leak)


def test_counts_parsed_from_captions():
    recs = {r.filename: r for r in D.load_captions(MINI, "ucm")}
    assert stated_counts(recs["101.tif"]).get("airplane") == 4  # "Four airplanes are parked at the airport ."
    assert stated_counts(recs["1992.tif"]).get("storage_tank") == 4
    many = ImageRecord("ucm", "x.tif", "x", "train", ["two airplanes here", "many airplanes"], [], None)
    assert "airplane" not in stated_counts(many)  # a vague quantifier contradicts the number


def test_presence_negatives_absent_from_every_reference(built):
    result, _ = built
    refs = {(r.dataset, r.image): r for ds in D.DATASETS for r in D.load_captions(MINI, ds)}
    negatives = [s for sp in result.splits.values() for s in sp
                 if s["task"].startswith("presence") and s["meta"]["answer"] == "no"]
    positives = [s for sp in result.splits.values() for s in sp
                 if s["task"].startswith("presence") and s["meta"]["answer"] == "yes"]
    v1 = ("presence_en", "presence_zh")  # v1 balances yes / no per image; v2 asks one free question per image
    assert negatives and sum(s["task"] in v1 for s in negatives) == sum(s["task"] in v1 for s in positives)
    assert any(s["task"] == "presence" for s in negatives)
    for s in negatives:
        rec, obj = refs[(s["dataset"], s["image"])], OBJECTS[s["meta"]["object"]]
        assert obj.negative_ok
        assert not any(obj.in_en(x) for x in rec.refs_en) and not any(obj.in_zh(x) for x in rec.refs_zh)
    rec = refs[("ucm", "ucm/images/192.jpg")]
    assert all(o.key != "airplane" for o in absent_objects(rec))


def test_deterministic_with_seed(tmp_path):
    a = D.build(D.BuildConfig(data_root=MINI, require_images=False, out=tmp_path / "a", seed=3)).splits
    b = D.build(D.BuildConfig(data_root=MINI, require_images=False, out=tmp_path / "b", seed=3)).splits
    c = D.build(D.BuildConfig(data_root=MINI, require_images=False, out=tmp_path / "c", seed=4)).splits
    assert a == b and a != c


def test_original_format_round_trip(tmp_path):
    path = MINI / "zh" / "seed-remoteglm" / "UCM-zh-prompt.json"
    rows = D.read_original(path)
    samples = D.original_to_samples(rows, D.load_captions(MINI, "ucm"))
    assert len(samples) == len(rows) and all(s["task"] == "describe_zh" for s in samples)
    D.write_original(D.samples_to_original(samples), tmp_path / "o.json")
    assert D.read_original(tmp_path / "o.json") == rows


def test_missing_images_are_left_out_and_noted(tmp_path):
    result = D.build(D.BuildConfig(data_root=MINI, out=tmp_path, datasets=("ucm",)))
    assert sum(result.card["totals"].values()) == 0
    assert "left out 24 of 24" in result.card["notes"][0] and "Note: ucm" in (tmp_path / "card.md").read_text()


def test_cli_build_and_export(tmp_path, capsys):
    assert D.main(["build", "--data-root", str(MINI), "--out", str(tmp_path), "--datasets", "ucm",
                   "--keep-missing-images"]) == 0
    assert "describe_zh" in capsys.readouterr().out
    assert D.main(["export-original", "--src", str(tmp_path / "train.jsonl"), "--dst", str(tmp_path / "o.json")]) == 0
    rows = D.read_original(tmp_path / "o.json")
    assert rows and set(rows[0]) == {"img", "prompt", "label"} and rows[0]["img"].startswith("./UCM/")


@pytest.mark.skipif(not (SHARED / "ucm" / "dataset.json").is_file(), reason="../shared/data not available")
def test_real_ucm_translations_cover_every_reference():
    recs = D.load_captions(SHARED, "ucm")
    assert len(recs) == 2100 and all(len(r.refs_zh) == 5 for r in recs)
    assert sum(r.split == "test" for r in recs) == 210


def test_module_entry_point_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "finetune.data", "build", "--data-root", str(MINI), "--out",
                           str(tmp_path), "--keep-missing-images"], cwd=MINI.parents[2], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| scene_zh |" in proc.stdout and (tmp_path / "train.jsonl").stat().st_size > 0
