"""Datasets: read any supported format into one in-memory COCO representation, check, split, synthesise."""

from instaseg.data.coco import CocoData, load_coco, load_dataset, save_coco

__all__ = ["CocoData", "load_coco", "load_dataset", "save_coco"]
