"""Stand-ins for the names that export writes into best_model.py above the runtime.

In a script these hold a checkpoint's values (export.sections renders them); here they
describe a small table classifier, so that api and cli, which read them, import, lint and run
on their own. tests/test_export.py checks that every exported script defines each of them.
"""

from __future__ import annotations

from torch import nn

# The data: what a raw row is and how it becomes the model's input.
TASK = "classification"
METRIC = "accuracy"  # the metric the search selected on: TASKS[TASK][0]
COLUMNS = None  # a table's columns, (name, kind, *settings): see inputs.encode_cells
TARGET = None  # the CSV column that holds the labels
IMAGE_MODE = None  # the Pillow mode image files are read in
INPUT_SHAPE = (2,)
MEAN = (0.0, 0.0)
STD = (1.0, 1.0)
CLASSES = ("a", "b")
TARGET_MEAN, TARGET_STD = 0.0, 1.0
TARGET_TRANSFORM = "none"  # what a regression learns: y, or log1p(y) (evaluation)
# The training recipe: names from the tables of recipe, and numbers.
OPTIMIZER = "adam"
LR = 0.001
WEIGHT_DECAY = 0.0
L1 = 0.0
MOMENTUM = 0.9
SCHEDULE = "constant"
BATCH_SIZE = 64
EPOCHS = 30
SCHEDULE_EPOCHS = 30  # the epochs SCHEDULE spans (a refit stops at EPOCHS inside it)
LABEL_SMOOTHING = 0.0
LOSS = None
AUGMENT = "none"
SEED = 0
KEEP = "best"  # which weights train keeps: recipe.KEEPS


class Model(nn.Sequential):
    """The trained network's architecture."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(2, 2))


def new_model() -> Model:
    """A Model to train, as the search started it."""
    return Model()
