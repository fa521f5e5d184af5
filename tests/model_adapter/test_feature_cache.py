"""Vision features are computed once per image: follow-up turns reuse them and answer exactly as without the cache."""

import torch

from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from model_adapter.feature_cache import FeatureCache

GREEDY = GenerationParams(max_new_tokens=12, do_sample=False)


def test_follow_up_turns_reuse_the_features_and_answer_as_without_cache(model_dir, airplane_jpg, harbor_jpg):
    airplane, harbor = load_image(airplane_jpg), load_image(harbor_jpg)
    first = [ChatMessage("user", "这张遥感图像展现了什么场景？", [airplane])]
    follow_up = first + [ChatMessage("assistant", "一个机场。"), ChatMessage("user", "图中有多少架飞机？")]
    two_images = follow_up + [ChatMessage("assistant", "三架。"), ChatMessage("user", "这张呢？", [harbor])]
    turns = [first, follow_up, two_images]
    plain = load_backend(model=str(model_dir), image_cache_mb=0)
    assert plain.feature_cache is None
    expected = [plain.generate(t, GREEDY).text for t in turns]

    cached = load_backend(model=str(model_dir))
    answers = [cached.generate(t, GREEDY).text for t in turns]
    streamed = "".join(c.text for c in cached.stream(two_images, GREEDY))
    assert answers == expected and streamed == expected[2]
    cache = cached.feature_cache
    # Encoded: the airplane once, the harbour once; every other use was a hit.
    assert (cache.misses, cache.hits, len(cache)) == (2, 4, 2)
    batch = cached.generate_batch(turns, GREEDY)
    assert [c.text for c in batch] == expected and cache.misses == 2


def test_the_same_pixels_from_another_file_hit_and_another_model_misses(airplane_jpg):
    image = load_image(airplane_jpg)
    copy = image.copy()
    a, b = FeatureCache(2**20, "model-a"), FeatureCache(2**20, "model-b")
    assert a.key(image) == a.key(copy) != b.key(image)
    assert a.key(image) != a.key(image.rotate(90))


def test_least_recently_used_features_go_first_within_the_byte_bound():
    cache = FeatureCache(max_bytes=3 * 400, model_key="m")  # room for three (10, 10) float32 tensors
    for name in "abc":
        cache.put(name, torch.zeros(10, 10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(10, 10))
    assert cache.get("b") is None and all(cache.get(k) is not None for k in "acd")
    assert cache.nbytes == 1200 and len(cache) == 3
    cache.put("huge", torch.zeros(100, 100))  # larger than the whole cache: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
