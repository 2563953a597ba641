"""The code of best_model.py that is not generated: run by the search, copied into the script.

    inputs        raw table cells and image files -> numbers
    evaluation    a model's outputs in batches, the metrics of a task
    recipe        optimizers, schedules, losses and augmentation, by name
    loop          the training loop, epoch by epoch
    importance    which inputs a model relies on: permutation, contributions, saliency
    api           the script's functions: load_model, prepare, predict, evaluate, train
    explain       the script's explain and explain_row, and how the command shows them
    cli           the script's command line
    placeholders  stand-ins for the constants the exporter generates (never copied)

The search trains and encodes with inputs, evaluation, recipe and loop (through data/, metrics
and train) and explains its model with importance; export.verbatim copies the body of each
module but placeholders below the constants it writes: the script runs the search's own code. Modules here import the standard
library, numpy, torch (Pillow inside the functions that read images) and each other's names,
nothing else (tests/test_imports.py), and are formatted for the script's 88 columns.
"""
