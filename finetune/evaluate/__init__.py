"""Evaluation of any adapter-loadable model on a caption test split: captions, scenes, yes/no, counts, questions.

    python -m finetune.evaluate --model checkpoints/remoteglm-mini --dataset ucm --split test

- `runner.py`: the evaluation run (items, generation through `model_adapter`, scoring, report files) and its CLI;
- `caption_metrics.py`: BLEU / METEOR / ROUGE-L / CIDEr, answer parsers, faithfulness, the stock-sentence baseline;
- `questions.py`: the question-following report (held-out phrasings graded against each image's fact sheet).
It reads the test data through `finetune.data`; it never trains.
"""

from finetune.evaluate.runner import EvalConfig, EvalError, main, markdown, run, score

__all__ = ["EvalConfig", "EvalError", "main", "markdown", "run", "score"]
