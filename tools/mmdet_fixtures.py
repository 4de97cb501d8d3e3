"""Regenerate tests/fixtures/mmdet/: what CI needs of MMDetection without installing it.

    MMDET_PYTHON tools/mmdet_fixtures.py [--out tests/fixtures/mmdet] [--data ../shared/datasets/tiny_coco]

with MMDET_PYTHON the Python of the reference environment (docs/equivalence.md says how to make it). It writes:

- ``layouts.json.gz``: the tensor names, shapes and dtypes of every checkpoint MMDetection publishes for our
  recipes (RTMDet-Ins tiny to x, their CSPNeXt ImageNet classifiers, SOLOv2 R50 1x and 3x), from the models its
  configs build with random initialisation; tests/test_published_weights.py converts each completely.
- for one reduced-width configuration per architecture (``rtmdet_ins`` and ``solov2``):
  ``<arch>.pth``: the reference's random weights (made to give distinct outputs) in the published format
  (``meta`` + ``state_dict``, written as ``publish_model.py`` writes); ``<arch>.npz``: a picture, its
  targets, and the reference's outputs on it: backbone and neck features, head outputs, instances before and after
  its own post-processing, training losses and the assignment.
- ``runner.pth``: what mmengine's Runner saves during training (with the message hub that torch's weights_only
  loading refuses), the reduced RTMDet-Ins's weights inside.

Nothing of MMDetection is copied: every output comes from the installed package (tools/mmdet_reference.py).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import io
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmdet_reference as R  # noqa: E402  (installs the mmcv._ext stand-in first)
import torch  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

PICTURE = "000000005802.jpg"  # tiny_coco train: people, a table, cups
SEED = 0
# the reduced configurations: narrow networks at small inputs, on a picture already at the input size (no resize)
RTMDET_REDUCED = dict(deepen=0.167, widen=0.0625, channels=16, size=(128, 96))
# timm's plain ResNet stem is always 64 wide (stem_width only sizes its deep stems)
SOLOV2_REDUCED = dict(stem=64, widths=(8, 16, 32, 64), fpn=16, head=16, kernel=16, feat=16, groups=4,
                      grids=[12, 10, 8, 6, 4], ranges=[[1, 24], [12, 48], [24, 96], [48, 192], [96, 512]],
                      size=(256, 192))  # fmt: skip


# ---------------------------------------------------------------- layouts of the published checkpoints
def _literal(node: ast.AST):
    """A config's dict(...) / tuple / constant expression, evaluated without running the file."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict":
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_literal(e) for e in node.elts]
    return ast.literal_eval(node)


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _model_dict(path: str) -> dict:
    """The ``model`` dict of a config file and the local ``_base_`` files it extends (mmpretrain's own bases,
    ``mmpretrain::``, hold no model)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    values = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    bases = _literal(values["_base_"]) if "_base_" in values else []
    model: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if base.startswith("./"):
            model = _merged(model, _model_dict(os.path.join(os.path.dirname(path), base)))
    return _merged(model, _literal(values["model"]))


def classifier_layout(size: str) -> list:
    """CSPNeXt ImageNet classifier (mmpretrain's ImageClassifier: backbone, pooling, linear head): its config needs
    mmpretrain's bases, so its model dict is read from the file and the backbone built by mmdet."""
    model = _model_dict(os.path.join(R.CONFIGS, R.CSPNEXT[size]))
    backbone = dict(model["backbone"], type="CSPNeXt", act_cfg=dict(type="SiLU"))
    net = R.MODELS.build(backbone)
    head = model["head"]
    layout = [[f"backbone.{k}", list(v.shape), str(v.dtype)] for k, v in net.state_dict().items()]
    return layout + [["head.fc.weight", [head["num_classes"], head["in_channels"]], "torch.float32"],
                     ["head.fc.bias", [head["num_classes"]], "torch.float32"]]  # fmt: skip


def layouts() -> dict:
    out = {}
    for size, relative in R.RTMDET.items():
        sd = R.build(R.load_config(relative)).state_dict()
        out[os.path.basename(relative)[:-3]] = [[k, list(v.shape), str(v.dtype)] for k, v in sd.items()]
        out[os.path.basename(R.CSPNEXT[size])[:-3]] = classifier_layout(size)
    for relative in R.SOLOV2.values():
        sd = R.build(R.load_config(relative)).state_dict()
        out[os.path.basename(relative)[:-3]] = [[k, list(v.shape), str(v.dtype)] for k, v in sd.items()]
    return out


# ---------------------------------------------------------------- pictures, targets, instances
def prepare_picture(data: str, size: tuple[int, int], folder: str) -> tuple[str, np.ndarray, float]:
    """The picture resized to ``size`` (w, h) and saved losslessly: both sides then read the same pixels and need
    no resize. Returns (path, RGB array, scale from the original)."""
    image = cv2.imread(os.path.join(data, "images", PICTURE))
    scale = size[0] / image.shape[1]
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    path = os.path.join(folder, "picture.png")
    cv2.imwrite(path, small)
    return path, small[:, :, ::-1].copy(), scale


def annotations(data: str, scale: float, size: tuple[int, int], frame: tuple[int, int]) -> dict:
    """The picture's tiny_coco objects at the resized size, masks padded to the batch ``frame`` (h, w)."""
    with open(os.path.join(data, "annotations", "instances_train.json")) as f:
        coco = json.load(f)
    image = next(im for im in coco["images"] if im["file_name"] == PICTURE)
    cats = sorted(c["id"] for c in coco["categories"])
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd", 0)]
    h0, w0 = image["height"], image["width"]
    boxes, labels, masks = [], [], []
    for a in anns:
        rle = mask_utils.frPyObjects(a["segmentation"], h0, w0)
        full = mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle)
        small = cv2.resize(full, size, interpolation=cv2.INTER_NEAREST)
        x, y, w, h = (v * scale for v in a["bbox"])
        if small.any() and w > 1 and h > 1:
            padded = np.zeros(frame, np.uint8)
            padded[: size[1], : size[0]] = small
            boxes.append([x, y, x + w, y + h])
            labels.append(cats.index(a["category_id"]))
            masks.append(padded)
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
            "masks": np.stack(masks) if masks else np.zeros((0, *frame), np.uint8)}  # fmt: skip


def rle_json(masks: torch.Tensor) -> str:
    encoded = mask_utils.encode(np.asfortranarray(masks.cpu().numpy().astype(np.uint8).transpose(1, 2, 0)))
    return json.dumps([{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in encoded])


def instances(prefix: str, result) -> dict:
    return {f"{prefix}.boxes": result.bboxes.cpu().numpy(), f"{prefix}.scores": result.scores.cpu().numpy(),
            f"{prefix}.labels": result.labels.cpu().numpy(), f"{prefix}.masks": np.array(rle_json(result.masks))}


def loss_samples(samples: list, target: dict) -> list:
    ds = DetDataSample(metainfo=dict(samples[0].metainfo))
    frame = target["masks"].shape[-2:]
    ds.set_metainfo(dict(pad_shape=frame, batch_input_shape=frame))
    ds.gt_instances = InstanceData(bboxes=torch.from_numpy(target["boxes"]), labels=torch.from_numpy(target["labels"]),
                                   masks=BitmapMasks(target["masks"], *frame))  # fmt: skip
    return [ds]


# ---------------------------------------------------------------- the reduced configurations
def distinct_reference(cfg, data: str, folder: str, size: tuple[int, int], make_distinct) -> tuple:
    """(reference, its input batch, data samples, the picture, its scale): the reference built from ``cfg`` with
    random weights made to give distinct outputs on the picture (``make_distinct``)."""
    ref = R.build(cfg)
    path, picture, scale = prepare_picture(data, size, folder)
    x, samples = R.pipeline_inputs(ref, cfg, [path])
    make_distinct(ref, x, torch.Generator().manual_seed(SEED))
    return ref, x, samples, picture, scale


def rtmdet_reduced(data: str, folder: str) -> tuple[dict, dict, torch.nn.Module]:
    c = RTMDET_REDUCED
    ch = [int(256 * c["widen"]), int(512 * c["widen"]), int(1024 * c["widen"])]
    cfg = R.load_config(R.RTMDET["tiny"], **{"backbone.widen_factor": c["widen"], "backbone.deepen_factor": c["deepen"],
                                             "neck.in_channels": ch, "neck.out_channels": c["channels"],
                                             "bbox_head.in_channels": c["channels"],
                                             "bbox_head.feat_channels": c["channels"]})  # fmt: skip
    w, h = c["size"]
    R.set_test_size(cfg, w, w, pad=True)  # a w x w canvas, as the published 640 x 640
    ref, x, samples, picture, scale = distinct_reference(cfg, data, folder, (w, h), R.make_rtmdet_distinct)
    out = {"picture": picture}
    with torch.no_grad():
        feats = ref.backbone(x)
        neck = ref.neck(feats)
        cls, reg, ker, protos = ref.bbox_head(neck)
        for name, maps in (("backbone", feats), ("neck", neck), ("cls", cls), ("reg", reg), ("kernel", ker)):
            out.update({f"{name}.{i}": m.numpy() for i, m in enumerate(maps)})
        out["protos"] = protos.numpy()
        metas = [s.metainfo for s in samples]
        raw = ref.bbox_head.predict_by_feat(list(cls), list(reg), list(ker), protos, batch_img_metas=metas,
                                            rescale=False)  # fmt: skip
        out.update(instances("A", raw[0]))
        final = ref.predict(x, [DetDataSample(metainfo=s.metainfo) for s in samples], rescale=True)
        out.update(instances("B", final[0].pred_instances))
    target = annotations(data, scale, (w, h), tuple(x.shape[-2:]))
    out.update({f"target.{k}": v for k, v in target.items()})
    assigned = []
    original = ref.bbox_head.assigner.assign
    ref.bbox_head.assigner.assign = lambda *a, **k: assigned.append(original(*a, **k)) or assigned[-1]
    ref.train()
    losses = ref.loss(x, loss_samples(samples, target))
    ref.bbox_head.assigner.assign = original
    ref.eval()
    out["loss.loss_cls"] = np.float64(sum(losses["loss_cls"]))
    out["loss.loss_box"] = np.float64(sum(losses["loss_bbox"]))
    out["loss.loss_mask"] = np.float64(losses["loss_mask"])
    out["assign.gt_index"] = (assigned[0].gt_inds - 1).clamp(min=-1).numpy().astype(np.int16)
    overrides = [f"model.widen={c['widen']}", f"model.deepen={c['deepen']}", f"model.neck_channels={c['channels']}",
                 f"input.min_size={w}", f"input.max_size={w}"]  # fmt: skip
    return out, {"overrides": overrides, "recipe": "rtmdet_ins_tiny", "config": R.RTMDET["tiny"]}, ref


def solov2_reduced(data: str, folder: str) -> tuple[dict, dict, torch.nn.Module]:
    c = SOLOV2_REDUCED
    widths = list(c["widths"])
    cfg = R.load_config(R.SOLOV2["r50"], **{
        "backbone.depth": 18, "backbone.stem_channels": c["stem"], "backbone.base_channels": widths[0],
        "backbone.init_cfg": None, "neck.in_channels": widths, "neck.out_channels": c["fpn"],
        "mask_head.in_channels": c["fpn"], "mask_head.feat_channels": c["head"], "mask_head.stacked_convs": 2,
        "mask_head.num_grids": c["grids"], "mask_head.scale_ranges": c["ranges"],
        "mask_head.norm_cfg": dict(type="GN", num_groups=c["groups"], requires_grad=True),
        "mask_head.mask_feature_head.feat_channels": c["feat"],
        "mask_head.mask_feature_head.out_channels": c["kernel"],
        "mask_head.mask_feature_head.norm_cfg": dict(type="GN", num_groups=c["groups"])})  # fmt: skip
    w, h = c["size"]
    R.set_test_size(cfg, w, h, pad=False)
    ref, x, samples, picture, scale = distinct_reference(cfg, data, folder, (w, h), R.make_solov2_distinct)
    out = {"picture": picture}
    with torch.no_grad():
        feats = ref.backbone(x)
        neck = ref.neck(feats)
        kernels, cls, mask_feat = ref.mask_head(neck)
        for name, maps in (("backbone", feats), ("neck", neck), ("cls", cls), ("kernel", kernels)):
            out.update({f"{name}.{i}": m.numpy() for i, m in enumerate(maps)})
        out["mask_feat"] = mask_feat.numpy()
        metas = [dict(s.metainfo, ori_shape=s.img_shape) for s in samples]
        raw = ref.mask_head.predict_by_feat([k.clone() for k in kernels], [c.clone() for c in cls], mask_feat,
                                            batch_img_metas=metas)  # fmt: skip
        out.update(instances("A", raw[0]))
        final = ref.predict(x, [DetDataSample(metainfo=s.metainfo) for s in samples], rescale=True)
        out.update(instances("B", final[0].pred_instances))
    target = annotations(data, scale, (w, h), tuple(x.shape[-2:]))
    out.update({f"target.{k}": v for k, v in target.items()})
    ref.train()
    losses = ref.loss(x, loss_samples(samples, target))
    ref.eval()
    out["loss.loss_cls"] = np.float64(losses["loss_cls"])
    out["loss.loss_mask"] = np.float64(losses["loss_mask"])
    overrides = [f"model.fpn_channels={c['fpn']}", f"model.head_channels={c['head']}", "model.stacked_convs=2",
                 f"model.kernel_channels={c['kernel']}", f"model.mask_feat_channels={c['feat']}",
                 f"model.gn_groups={c['groups']}", f"model.num_grids={c['grids']}", f"model.scale_ranges={c['ranges']}",
                 f"input.min_size={h}", f"input.max_size={w}"]  # fmt: skip
    backbone = {"timm": "resnet18", "channels": widths, "stem_width": c["stem"]}
    info = {"overrides": overrides, "recipe": "solov2_r50_fpn", "config": R.SOLOV2["r50"], "backbone": backbone}
    return out, info, ref


# ---------------------------------------------------------------- files in the publisher's formats
def published_file(path: str, cfg_text: str, state: dict) -> None:
    """meta + state_dict, serialised as MMDetection's tools/model_converters/publish_model.py does."""
    from mmdet.datasets import CocoDataset

    meta = dict(cfg=cfg_text, dataset_meta=dict(CocoDataset.METAINFO), epoch=300, iter=0, seed=SEED,
                experiment_name="reduced", time=time.strftime("%Y%m%d_%H%M%S"))  # fmt: skip
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)


def runner_file(path: str, state: dict) -> None:
    """What mmengine's Runner.save_checkpoint writes during training (the optimizer's moments left out to keep
    the fixture small): its message hub holds mmengine objects and numpy arrays."""
    import mmengine
    from mmengine.logging import MessageHub
    from mmengine.runner import save_checkpoint

    hub = MessageHub.get_instance("fixture")
    hub.update_scalar("train/loss", 1.5)
    hub.update_info("iter", 10)
    meta = dict(epoch=1, iter=10, seed=SEED, mmengine_version=mmengine.__version__)
    save_checkpoint({"meta": meta, "state_dict": state, "message_hub": hub.state_dict(),
                     "param_schedulers": [{"last_epoch": 1, "base_lrs": [0.004]}]}, path)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "mmdet"))
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets",
                                                  "tiny_coco"))  # fmt: skip
    args = p.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    text = json.dumps({"mmdet": R.mmdet.__version__, "layouts": layouts()})
    # mtime 0: the same layouts give the same bytes, so a regeneration changes the file only when they change
    with open(os.path.join(args.out, "layouts.json.gz"), "wb") as raw, gzip.GzipFile(None, "wb", 9, raw, 0) as f:
        f.write(text.encode())
    with tempfile.TemporaryDirectory() as tmp:
        for arch, make in (("rtmdet_ins", rtmdet_reduced), ("solov2", solov2_reduced)):
            out, info, ref = make(args.data, tmp)
            info.update(mmdet=R.mmdet.__version__, torch=torch.__version__, picture=PICTURE, seed=SEED)
            buffer = io.BytesIO()
            np.savez_compressed(buffer, info=np.array(json.dumps(info)), **out)
            with open(os.path.join(args.out, f"{arch}.npz"), "wb") as f:
                f.write(buffer.getvalue())
            state = {k: v.clone() for k, v in ref.state_dict().items()}
            published_file(os.path.join(args.out, f"{arch}.pth"), "reduced " + info["config"], state)
            if arch == "rtmdet_ins":
                runner_file(os.path.join(args.out, "runner.pth"), state)
    for name in sorted(os.listdir(args.out)):
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name)) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
