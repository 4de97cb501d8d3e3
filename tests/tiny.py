"""`maskrcnn_fast` shrunk for tests that run the whole training engine: 64 px images, narrow heads, few proposals,
no data-loading workers. One list, so every such test trains the same small model."""

SMALL_MODEL = [
    "model.fpn_channels=16",
    "model.representation_size=64",
    "model.mask_head_layers=[16]",
    "model.mask_dim_reduced=16",
    "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=30",
    "train.batch_size=2",
    "train.num_workers=0",
    "train.warmup_iters=2",
    "train.max_minutes=null",
    "train.ema=true",
    "train.lr=0.01",
]
# runs that test the training loop skip the analysis of best.ckpt after training (test_cli_train keeps it)
TINY = ["input.min_size=64", "input.max_size=64", *SMALL_MODEL, "eval.analyze=false"]
TINY_ARGS = [arg for o in TINY for arg in ("-o", o)]  # the same as command-line overrides

# the classes of conftest's `tiny_ckpt` (a confident untrained checkpoint for prediction tests)
CKPT_CLASSES = ["cat", "dog"]
CKPT_CATEGORY_IDS = [3, 7]
