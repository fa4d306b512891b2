"""The dataset layer: record, read, check and summarise LeRobot v3.0 dataset folders.

`DatasetWriter` records episodes, `open_dataset` reads robota's and LeRobot's datasets (v3.0
and v2.1), `convert_v21_to_v30` converts v2.1 folders, and `summarise`, `format_summary` and
`fingerprint` back `robota dataset info`. `robota.datasets.validate` lists a dataset's
problems and `robota.datasets.recompute` recomputes its statistics. The torch training loader
lives in `robota.datasets.torch_loader`, the only module here that imports torch.
"""

from robota.datasets.layout import CODEBASE_VERSION
from robota.datasets.reader import DatasetReader, open_dataset
from robota.datasets.summary import fingerprint, format_summary, summarise
from robota.datasets.v21 import V21DatasetReader, convert_v21_to_v30
from robota.datasets.writer import DatasetWriter

__all__ = [
    "CODEBASE_VERSION",
    "DatasetReader",
    "DatasetWriter",
    "V21DatasetReader",
    "convert_v21_to_v30",
    "fingerprint",
    "format_summary",
    "open_dataset",
    "summarise",
]
