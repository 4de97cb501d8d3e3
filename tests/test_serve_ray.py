"""The same application on Ray Serve: two replicas behind Ray's proxy on 127.0.0.1 answer PaddleX's endpoint with
the Python API's masks, and bad requests with the same json errors as on uvicorn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import instaseg
from instaseg.deploy.serve.config import ServeConfig
from serve_helpers import b64, call, free_port, make_tiny_checkpoint, png_bytes, post_json, sample_image

pytestmark = pytest.mark.slow  # a Ray cluster and two replicas take a minute to start on two cores


@pytest.fixture(scope="module")
def ray_service(tmp_path_factory: pytest.TempPathFactory):
    import ray
    from ray import serve

    from instaseg.deploy.serve.ray_app import start

    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("serve-ray") / "tiny.pt")
    config = ServeConfig(model=str(ckpt), port=free_port(), threshold=0.3, max_batch_size=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        start(config, replicas=2)
        yield config, ckpt
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_serve_paddlex_masks_equal_python_api(ray_service, tmp_path: Path) -> None:
    config, ckpt = ray_service
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes(sample_image(0)))
    expected = next(instaseg.create_model(ckpt, threshold=0.3).predict(picture))
    for _ in range(4):  # several requests, spread over the replicas
        answer = post_json(config.port, "/instance-segmentation", {"image": b64(picture.read_bytes())})
        assert answer.status == 200, answer.body
        instances = answer.json["result"]["instances"]
        assert len(instances) == len(expected) > 0
        for inst, mask in zip(instances, expected.masks, strict=True):
            x0, y0, x1, y1 = (int(round(v)) for v in inst["bbox"])
            h, w = inst["mask"]["size"]
            decoded = mask_utils.decode({"size": [h, w], "counts": inst["mask"]["rleResult"].encode()})
            np.testing.assert_array_equal(decoded.astype(bool), mask[y0:y1, x0:x1])


def test_ray_serve_runs_two_replicas(ray_service) -> None:
    from ray import serve

    from instaseg.deploy.serve.ray_app import DEPLOYMENT

    deployment = serve.status().applications[DEPLOYMENT].deployments[DEPLOYMENT]
    assert deployment.replica_states.get("RUNNING") == 2


def test_ray_serve_refuses_like_uvicorn(ray_service) -> None:
    config, _ = ray_service
    answer = post_json(config.port, "/instance-segmentation", {"image": "@@ not base64 @@"})
    assert answer.status == 422 and answer.json["errorCode"] == 422 and "base64" in answer.json["errorMsg"]
    assert call(config.port, "GET", "/ready").json["ready"] is True
