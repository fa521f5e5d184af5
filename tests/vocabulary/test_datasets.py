"""The one dataset-folder default: REMOTEGLM_DATA_ROOT when set, else ../shared/data next to the repository, and
every --data-root default of finetune/ follows it."""

from pathlib import Path

from vocabulary.datasets import DATA_ROOT_ENV, DEFAULT_DATA_ROOT, data_root

REPO = Path(__file__).resolve().parents[2]


def test_default_is_shared_data_next_to_the_repository(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert data_root() == DEFAULT_DATA_ROOT == REPO.parent / "shared" / "data"


def test_environment_variable_wins_and_the_configs_follow_it(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert data_root() == tmp_path

    from finetune.data import BuildConfig
    from finetune.evaluate import EvalConfig
    from finetune.mini import MiniTrainConfig

    assert BuildConfig().data_root == EvalConfig().data_root == MiniTrainConfig().data_root == tmp_path
