"""The model MLflow serves: the exported best_model.py, run as shipped.

MLflow logs this file as a pyfunc "model from code" (registry.log_model), with the export
folder (best_model.py, weights.pt) as its artifact "export". Loading the model runs this file,
which loads best_model.py with `runpy` and calls its `load_model()`; `predict` calls its
`predict(rows, model)`. So `mlflow.pyfunc.load_model(uri).predict(...)`, `mlflow models
predict` and `mlflow models serve` give what `python best_model.py predict` gives, and no
pickle is involved: MLflow stores this code, and the weights load with weights_only=True.

It runs where automodel is not installed: it imports only mlflow, numpy, pandas and the
standard library.

Input: raw rows, as best_model.py takes them.
- A table: a DataFrame with the CSV's feature columns by name (in any order; other columns
  are ignored), cells as text or numbers; a gap is an empty or missing cell ('', 'NA', '?',
  None, NaN).
- Other data: a DataFrame or an array of the flat raw values, one row per sample (digits: 64
  values; an image: its pixels, channels first). The signature declares them double: MLflow
  takes float and small int arrays, and JSON numbers, but refuses int64 (cast it to float).

Output: a DataFrame, one row per input row.
- `prediction`: the class name (classification) or the predicted value (regression).
- `p_<class>`, one column per class in best_model.CLASSES order (classification only): the
  class probabilities.
"""

import runpy
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

SCRIPT = "best_model.py"


class ShippedScript(PythonModel):
    """best_model.py from the artifact "export", behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        folder = Path(context.artifacts["export"])
        # run_name other than __main__: the script's command line does not start.
        self.script = runpy.run_path(str(folder / SCRIPT), run_name="best_model")
        self.model = self.script["load_model"]()  # the weights.pt next to the script

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = raw_rows(model_input, self.script["COLUMNS"])
        predictions, probabilities = self.script["predict"](rows, self.model)
        return frame(predictions, probabilities, self.script["CLASSES"])


def raw_rows(model_input, columns):
    """What best_model.predict takes: a table's cells in COLUMNS order, gaps as '' (None and
    NaN are how pandas and JSON carry an empty cell); else the values as an array."""
    if columns is None:
        values = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else model_input
        return np.asarray(values)
    if not isinstance(model_input, pd.DataFrame):
        return model_input  # rows of cells, already in COLUMNS order
    names = [c[0] for c in columns]
    missing = [n for n in names if n not in model_input.columns]
    if missing:
        raise ValueError(f"the input lacks the columns {missing}; the model reads {names}")
    cells = model_input[names].astype(object).to_numpy()
    return [["" if _gap(cell) else cell for cell in row] for row in cells]


def _gap(cell) -> bool:
    return pd.api.types.is_scalar(cell) and bool(pd.isna(cell))


def frame(predictions, probabilities, classes) -> pd.DataFrame:
    """The output table: `prediction`, then one `p_<class>` column per class."""
    out = pd.DataFrame({"prediction": predictions})
    if probabilities is not None:
        p = np.asarray(probabilities, dtype=np.float64)
        for j, name in enumerate(classes):
            out[f"p_{name}"] = p[:, j]
    return out


mlflow.models.set_model(ShippedScript())
