"""instaseg.inference.backends: one module per runtime, all behind the same `Predictor`.

A backend module provides ``load(path, device) -> (backend, info)``, registered by file suffix in
`instaseg.inference.predictor`. ``info`` holds ``class_names``, ``category_ids`` and ``input`` (min_size, max_size).
The backend object has ``name``, ``device``, ``spec`` (an `InputSpec`: sizes, mean/std, padding multiple, used by
the shared pre-processing), ``synchronize()`` (wait for queued device work, for honest stage timings) and
``__call__(batch [B,3,H,W] normalised float tensor, image_sizes [(h, w)] before padding) -> [RawDetections]``:
per image, boxes in the resized frame, scores, labels 1..K and low-resolution mask probabilities [N,M,M], left
unpasted. The shared post-processing maps boxes to the original image and pastes masks one box at a time.
"""
