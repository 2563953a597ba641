"""The code of best_model.py that is not generated: run by the search, copied into the script.

    inputs      raw table cells and image files -> numbers
    evaluation  a model's outputs in batches, the metrics of a task
    recipe      optimizers, schedules, losses and augmentation, by name
    loop        the training loop, epoch by epoch
    api         the script's functions: load_model, prepare, predict, evaluate, train
    cli         the script's command line

The search trains and encodes with inputs, evaluation, recipe and loop (through data/, metrics
and train), and `export` copies every module here, body after imports, below the constants it
writes: so the script runs the search's own code. api and cli read those constants; in the
package, `placeholders` stands in for them. Modules here import the standard library, numpy,
torch (Pillow where images are read) and each other's names, nothing else of automodel.
"""
