"""config.mask_url: no password, secret query parameter or token of a URL survives in what
automodel writes or prints, and URLs without secrets come back as written."""

from __future__ import annotations

import shlex

import pytest

from automodel.config import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # A slash in the password, a password in the query, a password without a user.
        ("postgresql://alice:pa/ss@h/db", "postgresql://alice:***@h/db"),
        ("postgresql://h/db?password=x", "postgresql://h/db?password=***"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        # The ordinary ones.
        (
            "postgresql+psycopg2://alice:s3cr%40t@db.example:5432/optuna",
            "postgresql+psycopg2://alice:***@db.example:5432/optuna",
        ),
        ("http://bob:hunter2@mlflow:5000", "http://bob:***@mlflow:5000"),
        ("https://mlflow.example/api?token=abc&x=1", "https://mlflow.example/api?token=***&x=1"),
        ("postgresql://alice:p@ss@h/db", "postgresql://alice:***@h/db"),  # unescaped @
        (
            "postgresql://h/db?sslmode=require&api_key=k",
            "postgresql://h/db?api_key=***&sslmode=require",
        ),
        # Forms SQLAlchemy cannot parse: the fallback pattern.
        ("mlflow-artifacts://u:pw@h/x?secret=s", "mlflow-artifacts://u:***@h/x?secret=***"),
        ("http://u:p/w@h:notaport/x", "http://u:***@h:notaport/x"),
        # Nothing to hide: unchanged, to the character.
        ("postgresql://db.example/optuna", "postgresql://db.example/optuna"),
        ("postgresql://alice@db.example/optuna", "postgresql://alice@db.example/optuna"),
        ("sqlite:///runs/mlflow.db", "sqlite:///runs/mlflow.db"),
        ("sqlite:///C:/runs/mlflow.db", "sqlite:///C:/runs/mlflow.db"),
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000/"),
        ("runs/digits-mlp", "runs/digits-mlp"),
        (None, None),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_urls_inside_a_command_line_or_a_message_are_masked_and_the_rest_kept():
    command = "python -m automodel search " + " ".join(
        shlex.quote(a)
        for a in [
            "study.storage=postgresql://u:it's@h/db?password=z",
            "tracking.uri=http://me:hunter2@mlflow:5000",
            "seed=1",
        ]
    )
    masked = mask_url(command)
    for secret in ("it", "'s", "z", "hunter2"):
        assert f":{secret}" not in masked and f"={secret}" not in masked, masked
    assert masked.endswith("tracking.uri=http://me:***@mlflow:5000 seed=1"), masked
    assert shlex.split(masked)[4] == "study.storage=postgresql://u:***@h/db?password=***"
    message = "could not connect to postgresql://:pw@h/db: connection refused."
    assert mask_url(message) == "could not connect to postgresql://:***@h/db: connection refused."
