"""The dataset vocabulary: scene classes, the English -> Chinese glossary, object terms, where the datasets live.

Pure data and small lookups, importing nothing of the project, so that `translate/`, `finetune/`, `bot/` and
`bench/` can all depend on it:
- `vocabulary.scenes`: scene classes of UCM, Sydney and RSICD, and the file-name -> class rules (`scene_of`);
- `vocabulary.glossary`: glossary, colour and number words (translation prompts and checks);
- `vocabulary.objects`: countable / checkable objects, `objects_in`, `unsupported_objects` (faithfulness);
- `vocabulary.datasets`: `data_root()`, the one default for the dataset folder (`REMOTEGLM_DATA_ROOT`).
"""
