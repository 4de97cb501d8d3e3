"""PaddleDetection configs of the PaddleX R-CNN family and SOLOv2 (their model sections equal PaddleX's
paddlex/repo_apis/PaddleDetection_api/configs/<name>.yaml), and our recipe for each."""

MODELS = {
    # ours: (PaddleDetection config, PaddleX name)
    "maskrcnn_r50_c4": ("configs/mask_rcnn/mask_rcnn_r50_1x_coco.yml", "MaskRCNN-ResNet50"),
    "maskrcnn_r50_fpn": ("configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.yml", "MaskRCNN-ResNet50-FPN"),
    "maskrcnn_r50vd_fpn": ("configs/mask_rcnn/mask_rcnn_r50_vd_fpn_1x_coco.yml", "MaskRCNN-ResNet50-vd-FPN"),
    "maskrcnn_r101_fpn": ("configs/mask_rcnn/mask_rcnn_r101_fpn_1x_coco.yml", "MaskRCNN-ResNet101-FPN"),
    "maskrcnn_r101vd_fpn": ("configs/mask_rcnn/mask_rcnn_r101_vd_fpn_1x_coco.yml", "MaskRCNN-ResNet101-vd-FPN"),
    "maskrcnn_x101vd_fpn": ("configs/mask_rcnn/mask_rcnn_x101_vd_64x4d_fpn_1x_coco.yml", "MaskRCNN-ResNeXt101-vd-FPN"),
    "cascade_maskrcnn_r50_fpn": ("configs/cascade_rcnn/cascade_mask_rcnn_r50_fpn_1x_coco.yml",
                                 "Cascade-MaskRCNN-ResNet50-FPN"),
    "cascade_maskrcnn_r50vd_fpn": ("configs/cascade_rcnn/cascade_mask_rcnn_r50_vd_fpn_ssld_1x_coco.yml",
                                   "Cascade-MaskRCNN-ResNet50-vd-SSLDv2-FPN"),
    "solov2_r50_fpn": ("configs/solov2/solov2_r50_fpn_1x_coco.yml", "SOLOv2"),
}
