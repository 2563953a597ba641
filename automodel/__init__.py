"""automodel: automated neural-network search with Hydra, Optuna, PyTorch and MLflow."""

__version__ = "0.1.0"
