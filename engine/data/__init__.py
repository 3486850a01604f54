"""Labelled data sets: photos and their ground-truth masks, from the layouts people export.

    dataset.py   LabelledSet and open_dataset: layout detection, splits, data.yaml
    labels.py    Item, ShapeLabel (polygons, boxes, RLEs), MaskFileLabel, rasterising
    yolo.py      YOLO .txt labels          coco.py   COCO JSON        maskdir.py  images/ + masks/ folders
    rle.py       COCO run-length encoding  split.py  splitting by source photo
    archive.py   safe extraction of an uploaded zip

The public names are re-exported here: `from engine.data import open_dataset`.
"""

from engine.data.coco import COCO_FILE_NAME
from engine.data.dataset import LabelledSet, find_splits, open_dataset, split_layout
from engine.data.labels import COORDINATE_TOLERANCE, Item, MaskFileLabel, ShapeLabel, rasterise, read_mask_file
from engine.data.rle import decode_rle, rle_counts_from_string
from engine.data.split import source_photo_id, split_groups
from engine.data.yolo import parse_yolo_text
from engine.errors import LabelError, LabelWarning
from engine.prompts import parse_data_arg  # its home is engine.prompts; kept importable from here

__all__ = [
    "COCO_FILE_NAME", "COORDINATE_TOLERANCE", "Item", "LabelError", "LabelWarning", "LabelledSet", "MaskFileLabel",
    "ShapeLabel", "decode_rle", "find_splits", "open_dataset", "parse_data_arg", "parse_yolo_text", "rasterise",
    "read_mask_file", "rle_counts_from_string", "source_photo_id", "split_groups", "split_layout",
]
