"""Export: reusable (TF-Hub style) SavedModels and `.keras` archives, loaders, the CLI."""

from lra_keras.export.loader import ExportedModel, load
from lra_keras.export.saved_model import export_saved_model

__all__ = ["ExportedModel", "export_saved_model", "load"]
