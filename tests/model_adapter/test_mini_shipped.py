"""The shipped RemoteGLM-mini (checkpoints/remoteglm-mini) really sees: fixture images it never trained on
(UCM test split) get the right scene words, in Chinese and English, and a follow-up turn is answered.
Through the Auto classes and through `model_adapter`. Skipped while the checkpoint is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "checkpoints" / "remoteglm-mini"
FIXTURES = ROOT / "tests" / "fixtures" / "ucm"
pytestmark = pytest.mark.skipif(not (MODEL / "model.safetensors").exists(), reason="shipped mini model absent")

# fixture -> words of which the Chinese / English description or scene answer must contain one
EXPECT = {
    "airplane_192.jpg": (("飞机", "机场"), ("plane", "airport")),
    "harbor_1092.jpg": (("港口", "船", "港"), ("harbor", "boat", "ship")),
    "storagetanks_1992.jpg": (("储罐", "罐"), ("tank",)),
    "tenniscourt_2092.jpg": (("网球场",), ("tennis",)),
    "beach_392.jpg": (("海滩", "沙滩", "海"), ("beach", "sea", "ocean")),
    "forest_796.jpg": (("森林", "树"), ("forest", "tree")),
    "freeway_891.jpg": (("高速公路", "公路", "路"), ("freeway", "road", "highway")),
    "denseresidential_692.jpg": (("住宅", "房"), ("residential", "house")),
}


@pytest.fixture(scope="module")
def backend():
    from model_adapter import load_backend

    b = load_backend(model=str(MODEL), adapter=None, quant=None, device="cpu")
    yield b
    b.close()


def _ask(backend, conversations):
    from model_adapter import GenerationParams

    return [c.text for c in backend.generate_batch(conversations, GenerationParams(do_sample=False, max_new_tokens=48))]


def test_auto_classes_describe_the_airplane_fixture_in_chinese() -> None:
    import model_adapter.mini  # noqa: F401  (registers the mini with the Auto classes)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(MODEL)
    processor = AutoProcessor.from_pretrained(MODEL)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "请描述这张遥感图像。"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[Image.open(FIXTURES / "airplane_192.jpg")], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "飞机" in answer or "机场" in answer, answer


def test_scene_words_for_fixture_images_in_both_languages(backend) -> None:
    from model_adapter import ChatMessage

    names = list(EXPECT)
    images = [Image.open(FIXTURES / n) for n in names]
    zh = _ask(backend, [[ChatMessage("user", "请描述这张遥感图像。", [im])] for im in images])
    en = _ask(backend, [[ChatMessage("user", "Describe this remote sensing image.", [im])] for im in images])
    zh_scene = _ask(backend, [[ChatMessage("user", "这张遥感图像展现了什么场景？", [im])] for im in images])
    en_scene = _ask(backend, [[ChatMessage("user", "What scene does this remote sensing image show?", [im])]
                              for im in images])
    hits = {n: (any(w in a or w in c for w in EXPECT[n][0]),
                any(w in b.lower() or w in d.lower() for w in EXPECT[n][1]))
            for n, a, b, c, d in zip(names, zh, en, zh_scene, en_scene)}
    report = {n: (a, b, c, d) for n, a, b, c, d in zip(names, zh, en, zh_scene, en_scene)}
    # The example holds for the Chinese description itself; the model is ~86 % accurate overall, so the
    # rest by majority. NOTE: the English *description* of UCM airplane images is a known failure (it says
    # farmland for most of them; see the model card), so English counts the description or the scene answer.
    assert any(w in zh[0] for w in EXPECT["airplane_192.jpg"][0]), report["airplane_192.jpg"]
    for n in ("airplane_192.jpg", "harbor_1092.jpg"):
        assert all(hits[n]), report[n]
    assert sum(all(h) for h in hits.values()) >= 6, report


def test_follow_up_question_in_the_same_conversation(backend) -> None:
    from model_adapter import ChatMessage

    image = Image.open(FIXTURES / "harbor_1092.jpg")
    first = _ask(backend, [[ChatMessage("user", "请描述这张遥感图像。", [image])]])[0]
    follow = _ask(backend, [[ChatMessage("user", "请描述这张遥感图像。", [image]), ChatMessage("assistant", first),
                             ChatMessage("user", "图中有船吗？")]])[0]
    assert follow.startswith(("是", "有")), (first, follow)
    scene = _ask(backend, [[ChatMessage("user", "请描述这张遥感图像。", [image]), ChatMessage("assistant", first),
                            ChatMessage("user", "这张遥感图像展现了什么场景？")]])[0]
    assert "港口" in scene, (first, scene)


# --- v2: answers the question asked (each of these failed on v1, issue 11) ------------------------------------------
def test_without_an_image_it_asks_for_one_instead_of_inventing_a_scene(backend) -> None:
    from model_adapter import ChatMessage

    # Counting questions too: v2 and a first v3 run answered 「图中有多少辆车？」 / 「图中有几架飞机？」 without an image
    # with an invented count. The held-out evaluation measures 1.00 for v3; the web chat also asks for an image
    # itself before a question reaches the model.
    questions = ["这张遥感图像展现了什么场景？", "图中有多少辆车？", "图中有几架飞机？", "这片区域是城市还是乡村？",
                 "图中有水体吗？",
                 "Describe this remote sensing image.", "What can you see in the picture?",
                 "How many airplanes are there?"]
    answers = _ask(backend, [[ChatMessage("user", q)] for q in questions])
    for q, a in zip(questions, answers):
        assert "上传" in a or "upload" in a.lower(), (q, a)  # v1: 「这是一张十字路口的遥感图像。」


def test_answers_in_english_when_asked_and_repeats_in_english(backend) -> None:
    from finetune.data.intents import answer_lang
    from model_adapter import ChatMessage

    image = Image.open(FIXTURES / "harbor_1092.jpg")
    direct = _ask(backend, [[ChatMessage("user", "这是什么地方？请用英文回答。", [image])]])[0]
    assert answer_lang(direct) == "en" and "harbor" in direct.lower(), direct
    first = _ask(backend, [[ChatMessage("user", "这张遥感图像展现了什么场景？", [image])]])[0]
    again = _ask(backend, [[ChatMessage("user", "这张遥感图像展现了什么场景？", [image]),
                            ChatMessage("assistant", first), ChatMessage("user", "请用英文再说一遍")]])[0]
    assert answer_lang(again) == "en" and "harbor" in again.lower(), (first, again)  # v1: 0/10 in English


def test_says_honestly_what_the_image_cannot_tell(backend) -> None:
    from finetune.data.intents import CANNOT_TELL
    from model_adapter import ChatMessage

    image = Image.open(FIXTURES / "denseresidential_692.jpg")
    questions = ["这张图像是在哪个国家拍摄的？", "What year was this photo taken?", "这里住着多少人？"]
    answers = _ask(backend, [[ChatMessage("user", q, [image])] for q in questions])
    for q, a in zip(questions, answers):
        assert CANNOT_TELL.search(a), (q, a)  # v1: 「这是一张密集住宅区的遥感图像。」


def test_water_and_urban_questions_get_relevant_answers(backend) -> None:
    from finetune.evaluate.caption_metrics import parse_yes_no
    from model_adapter import ChatMessage

    harbor, dense = Image.open(FIXTURES / "harbor_1092.jpg"), Image.open(FIXTURES / "denseresidential_692.jpg")
    water, city = _ask(backend, [[ChatMessage("user", "有没有水体？", [harbor])],
                                 [ChatMessage("user", "这片区域是城市还是乡村？", [dense])]])
    assert parse_yes_no(water) == "yes", water  # v1: 「一。」
    assert "城市" in city and "乡村" not in city, city  # v1: 「。」
