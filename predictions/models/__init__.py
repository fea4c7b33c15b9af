"""The predictions app's tables, one module per concern; import them from here."""

from .jobs import ExportJob, JobStatus, LabelImportJob, PredictionJob, TrainingJob
from .predictions import Prediction, PredictionFailure
from .quality import AutoAcceptRun, LabelAudit, LabelSuspicion
from .reviews import LabelOperation, Review
from .tokens import ApiToken
from .versions import Label, ModelVersion, weights_storage

__all__ = [
    "ApiToken",
    "AutoAcceptRun",
    "ExportJob",
    "JobStatus",
    "Label",
    "LabelAudit",
    "LabelImportJob",
    "LabelOperation",
    "LabelSuspicion",
    "ModelVersion",
    "Prediction",
    "PredictionFailure",
    "PredictionJob",
    "Review",
    "TrainingJob",
    "weights_storage",
]
