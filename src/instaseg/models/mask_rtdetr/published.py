"""Mask-RT-DETR weights PaddleX and PaddleDetection publish, and how their tensor names become ours.

COCO models: PaddleX's instance-segmentation model list (Mask-RT-DETR-S..H, "trained model" files) and
PaddleDetection's ``configs/mask_rtdetr/README.md`` (the same networks, trained by
``mask_rtdetr_hgnetv2_{s,m,l,x,h}_6x_coco.yml``); PaddleX's model sections equal those configs key for key. The
metrics are theirs, on COCO val2017. ImageNet backbones: the ``pretrain_weights`` of those configs, PP-HGNetV2
classifiers (PaddleClas's B1, B2, B5 for S, M, X; PaddleDetection's L and H, PaddleClas's B4 and B6 tables).

The map (checked on every published layout by tests/test_paddle_weights.py):

| PaddleDetection | instaseg |
| --- | --- |
| ``backbone.*`` | ``backbone.*`` (the same names) |
| ``neck.encoder.0.layers.{i}.*`` | ``encoder.encoder.{i}.*`` |
| ``neck.mask_feat_head.scale_heads.{i}.{j}.0.*`` | ``encoder.mask_feat_head.scale_heads.{i}.{j}.*`` |
| ``neck.*`` (the hybrid encoder) | ``encoder.*`` |
| ``transformer.input_proj.{i}.conv.*`` / ``.norm.*`` | ``transformer.input_proj.{i}.0.*`` / ``.1.*`` |
| ``transformer.decoder.layers.*`` | ``transformer.layers.*`` |
| ``*.self_attn.in_proj_weight`` [D, 3D] | ``*.self_attn.{q,k,v}_proj.weight`` |
| ``*._mean`` / ``*._variance`` | ``*.running_mean`` / ``*.running_var`` |

Linear weights are transposed (Paddle stores [in, out]); ``transformer.denoising_class_embed`` is an embedding
table, the same in both. The ImageNet files hold the backbone without the ``backbone.`` prefix (PaddleDetection's
loader matches names by suffix), and a classifier (``last_conv``, ``fc``) that is no part of a detector.
PaddleClas's B1 and B2 were trained with a learnable affine after each activation (``lab.scale``, ``lab.bias``)
that the detection configs do not build: PaddleDetection skips those tensors, and so do we.
All of them read RGB / 255 (no mean and std), as our model does.
"""

from __future__ import annotations

from instaseg.models.common.paddle_names import batch_norm, first_rule, split_attention, torch_linear
from instaseg.models.detector import KeyMap, PublishedWeights

PADDLEX_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/{}_pretrained.pdparams"
PADDLEDET_URL = "https://paddledet.bj.bcebos.com/models/{}.pdparams"
PADDLECLAS_URL = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/{}.pdparams"
PRETRAINED_URL = "https://bj.bcebos.com/v1/paddledet/models/pretrained/{}.pdparams"
_RULES = (
    (r"^neck\.encoder\.0\.layers\.(\d+)\.", r"encoder.encoder.\1."),
    (r"^neck\.mask_feat_head\.scale_heads\.(\d+)\.(\d+)\.0\.", r"encoder.mask_feat_head.scale_heads.\1.\2."),
    (r"^neck\.", "encoder."),
    (r"^transformer\.input_proj\.(\d+)\.conv\.", r"transformer.input_proj.\1.0."),
    (r"^transformer\.input_proj\.(\d+)\.norm\.", r"transformer.input_proj.\1.1."),
    (r"^transformer\.decoder\.layers\.", "transformer.layers."),
)
_CLASSIFIER = ("last_conv.", "lab.", "fc.")  # the classifier: its conv, its LAB, its linear layer


def rename(name: str) -> str:
    """Our name for a tensor of PaddleDetection's MaskRTDETR (unknown names come back unchanged, so the conversion
    reports them as having no place in our model)."""
    return batch_norm(first_rule(_RULES, name))


def prepare(state: dict) -> dict:
    """Joint attention projections split, linear weights transposed to torch's layout."""
    return torch_linear(split_attention(state), embeddings=("denoising_class_embed.weight",))


def backbone_rename(name: str) -> str | None:
    """Our name for a tensor of a PP-HGNetV2 ImageNet file; None for its classifier and LAB affine terms."""
    if name.startswith(_CLASSIFIER) or ".lab." in name:
        return None
    return "backbone." + batch_norm(name)


DETECTOR = KeyMap(rename=rename, prepare=prepare)
BACKBONE = KeyMap(rename=backbone_rename, scope="backbone.")

# size -> (PaddleX name, box AP, mask AP, ImageNet file, its address template)
_SIZES = {
    "s": ("Mask-RT-DETR-S", 46.1, 41.0, "PPHGNetV2_B1_ssld_stage1_pretrained", PADDLECLAS_URL),
    "m": ("Mask-RT-DETR-M", 47.6, 42.7, "PPHGNetV2_B2_ssld_stage1_pretrained", PADDLECLAS_URL),
    "l": ("Mask-RT-DETR-L", 51.2, 45.7, "PPHGNetV2_L_ssld_pretrained", PRETRAINED_URL),
    "x": ("Mask-RT-DETR-X", 53.1, 47.5, "PPHGNetV2_B5_ssld_stage1_pretrained", PADDLECLAS_URL),
    "h": ("Mask-RT-DETR-H", 57.4, 50.6, "PPHGNetV2_H_ssld_pretrained", PRETRAINED_URL),
}


def _weights(size: str) -> tuple[PublishedWeights, ...]:
    name, box_ap, mask_ap, imagenet, imagenet_url = _SIZES[size]
    config = f"mask_rtdetr_hgnetv2_{size}_6x_coco"
    common = {"format": "paddle", "model": {"backbone": f"hgnetv2_{size}"}, "recipe": f"mask_rtdetr_{size}"}
    paddlex = PublishedWeights(name, "coco", PADDLEX_URL.format(name), publisher="PaddleX", key_map=DETECTOR,
                               box_ap=box_ap, mask_ap=mask_ap, config=config, **common)  # fmt: skip
    paddledet = PublishedWeights(config, "coco", PADDLEDET_URL.format(config), publisher="PaddleDetection",
                                 key_map=DETECTOR, box_ap=box_ap, mask_ap=mask_ap, note="the same model as "
                                 f"PaddleX's {name}", **common)  # fmt: skip
    publisher = "PaddleClas" if imagenet_url == PADDLECLAS_URL else "PaddleDetection"
    backbone = PublishedWeights(imagenet, "imagenet", imagenet_url.format(imagenet), publisher=publisher,
                                key_map=BACKBONE, num_classes=1000, config=imagenet,
                                note=f"the pretrain_weights of {config}", **common)  # fmt: skip
    return paddlex, paddledet, backbone


# per size, the first COCO match is what --weights coco takes: PaddleX's file
PUBLISHED: tuple[PublishedWeights, ...] = tuple(w for size in _SIZES for w in _weights(size))
