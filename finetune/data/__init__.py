"""Dataset building: caption files + Chinese translations -> train / val / test conversation JSONL.

    python -m finetune.data build --data-root ../shared/data --out runs/data/

- `builder.py`: reading the caption files and translations, splits, the build itself and its CLI;
- `tasks.py`: the v1 task generators (describe, scene, presence, count) and the `ImageRecord` / `Sample` types;
- `intents.py`: the v2 question intents (fact sheet per image, phrasings in `prompt_pools/v2/`, grading);
- `prompt_pools/`: the hand-written question and answer phrasings (data files).
The vocabulary (scene classes, objects) comes from `vocabulary/`; nothing here trains or evaluates a model.
"""

from finetune.data.builder import (
    DATASETS, DEFAULT_DATA_ROOT, ORIGINAL_FOLDERS, SHIPPED_EN, SHIPPED_ZH, SPLIT_FIELD, SPLITS, TRANSLATION_FILES,
    BuildConfig, BuildResult, build, build_samples, caption_file, card_markdown, check_no_leak, dataset_card,
    image_path, load_captions, load_translations, main, original_to_samples, read_jsonl, read_original,
    samples_to_original, write_jsonl, write_original,
)

__all__ = [
    "DATASETS", "DEFAULT_DATA_ROOT", "ORIGINAL_FOLDERS", "SHIPPED_EN", "SHIPPED_ZH", "SPLIT_FIELD", "SPLITS",
    "TRANSLATION_FILES", "BuildConfig", "BuildResult", "build", "build_samples", "caption_file", "card_markdown",
    "check_no_leak", "dataset_card", "image_path", "load_captions", "load_translations", "main",
    "original_to_samples", "read_jsonl", "read_original", "samples_to_original", "write_jsonl", "write_original",
]
