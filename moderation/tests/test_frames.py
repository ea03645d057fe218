"""Frame moderation, pure (no database): pHash and hash lists, the image classifiers, the frame gate
(hash, sampled and strict classification, fail modes, max_violations)."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest

from moderation import classifier as clf
from moderation import phash
from moderation.gate import PLACEHOLDER_GREY, UNVERIFIED, FrameGate
from moderation.policy import Policy

pytestmark = pytest.mark.profile("embedded")


def picture(seed: int, size: int = 512) -> np.ndarray:
    """A photo-like image: smooth random structure (low frequencies dominate, as in real frames)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, (6, 6, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)).astype(np.float32)
    return (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)


def jpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def test_phash_is_imagehashs_phash_bit_for_bit():
    import imagehash
    from PIL import Image

    for seed in range(5):
        img = picture(seed, 256)
        assert phash.to_hex(phash.phash(img)) == str(imagehash.phash(Image.fromarray(img)))


def test_a_listed_image_is_found_after_resize_reencode_brightness_and_noise_and_others_are_not():
    original = picture(1)
    listed = phash.HashList([(phash.phash(original), "listed")])
    rng = np.random.default_rng(0)
    variants = {
        "resize 256": resized(original, 256),
        "resize 1024": resized(original, 1024),
        "jpeg q90": jpeg_round_trip(original, 90),
        "jpeg q30": jpeg_round_trip(original, 30),
        "brighter": (original.astype(np.int16) + 30).clip(0, 255).astype(np.uint8),
        "darker": (original.astype(np.float32) * 0.7).astype(np.uint8),
        "noise": (original + rng.normal(0, 8, original.shape)).clip(0, 255).astype(np.uint8),
    }
    for name, variant in variants.items():
        match = listed.match(phash.phash(variant), 8)
        assert match is not None and match.category == "listed", name
    for seed in range(2, 22):
        assert listed.match(phash.phash(picture(seed)), 8) is None, seed


def test_hex_parsing_refuses_anything_but_16_hex_digits():
    assert phash.from_hex("00FF00ff00ff00ff") == 0x00FF00FF00FF00FF
    for bad in ("", "xyz", "0" * 15, "0" * 17, "g" * 16):
        with pytest.raises(ValueError):
            phash.from_hex(bad)


# -- the gate ---------------------------------------------------------------------------------------

class RedClassifier:
    """A deterministic classifier for the gate's logic: the share of strongly red pixels."""

    category = "test_red"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def score(self, pixels: np.ndarray) -> float:
        self.calls += 1
        if self.fail:
            raise RuntimeError("classifier unavailable")
        red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
        return float(red.mean())


RED = np.zeros((64, 64, 3), np.uint8)
RED[..., 0] = 255
GREEN = np.zeros((64, 64, 3), np.uint8)
GREEN[..., 1] = 200


def gate_with(policy: Policy, classifier=None, worker=None, hashes=None):
    events: list[dict] = []
    gate = FrameGate(policy, hashes or phash.HashList(), classifier=classifier, worker=worker, record=events.append)
    return gate, events


def test_a_listed_frame_is_replaced_in_the_frame_it_appears_on_input_and_output():
    img = picture(3, 128)
    gate, events = gate_with(Policy(frame_classifier="off", max_violations=5),
                             hashes=phash.HashList([(phash.phash(img), "csam_hash")]))
    assert gate.check(0, picture(4, 128), "output") is None
    for source in ("input", "output"):
        decision = gate.check(1, jpeg_round_trip(img, 50), source)
        assert decision is not None and (decision.source, decision.detector, decision.category) == (
            source, "hash", "csam_hash")
        assert (decision.replacement == PLACEHOLDER_GREY).all() and decision.replacement.shape == img.shape
    assert [(e["source"], e["detector"], e["action"]) for e in events] == [
        ("input", "hash", "replaced"), ("output", "hash", "replaced")]


def test_max_violations_ends_the_session_once():
    img = picture(5, 64)
    gate, events = gate_with(Policy(frame_classifier="off", max_violations=2),
                             hashes=phash.HashList([(phash.phash(img), "x")]))
    ends = [gate.check(i, img).end for i in range(4)]
    assert ends == [False, True, False, False]


def test_sampled_classification_replaces_from_the_next_frame_until_a_sample_clears():
    worker = clf.ClassifierWorker(RedClassifier())
    try:
        gate, events = gate_with(Policy(frame_classifier="sampled", classifier_every_n_frames=2,
                                        classifier_threshold=0.5, max_violations=10), RedClassifier(), worker)
        assert gate.check(0, GREEN) is None
        assert gate.check(1, RED) is None  # not a sampled frame: it goes out (the exposure window)
        assert gate.check(2, RED) is None  # sampled: scored off the frame path, this frame goes on
        assert worker.join_idle()
        decision = gate.check(3, GREEN)  # flagged: replaced from the next frame on
        assert decision is not None and (decision.detector, decision.category) == ("classifier", "test_red")
        assert gate.exposure == [0]  # frame 3 was the first after the violating sample 2
        assert gate.check(4, GREEN) is not None  # sample 4 is clean ...
        assert worker.join_idle()
        assert gate.check(5, GREEN) is None  # ... and clears the flag
        assert [e["action"] for e in events] == ["flagged", "cleared"]
    finally:
        worker.stop()


def test_strict_classification_replaces_the_frame_itself():
    red = RedClassifier()
    gate, events = gate_with(Policy(frame_classifier="strict", classifier_threshold=0.5), red)
    assert gate.check(0, GREEN) is None
    decision = gate.check(1, RED)
    assert decision is not None and decision.category == "test_red" and red.calls == 2
    assert events[0]["score"] == 1.0


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_a_failing_classifier_follows_fail_mode(fail_mode):
    gate, events = gate_with(Policy(frame_classifier="strict", fail_mode=fail_mode), RedClassifier(fail=True))
    decision = gate.check(0, GREEN)
    if fail_mode == "closed":
        assert decision is not None and decision.category == UNVERIFIED
        assert events[0]["action"] == "replaced"
    else:
        assert decision is None and events[0]["action"] == "passed"
    worker = clf.ClassifierWorker(RedClassifier(fail=True))
    try:
        gate, events = gate_with(Policy(frame_classifier="sampled", classifier_every_n_frames=1,
                                        fail_mode=fail_mode), RedClassifier(fail=True), worker)
        gate.check(0, GREEN)
        assert worker.join_idle()
        assert (gate.check(1, GREEN) is not None) == (fail_mode == "closed")
    finally:
        worker.stop()


def test_the_worker_refuses_samples_when_its_queue_is_full():
    release = threading.Event()

    class Slow:
        category = "x"

        def score(self, pixels):
            release.wait(5)
            return 0.0

    worker = clf.ClassifierWorker(Slow(), queue_size=1)
    try:
        done = []
        results = [worker.submit(clf.Sample(GREEN, i, lambda *a: done.append(a))) for i in range(4)]
        assert results.count(False) >= 2 and worker.refused >= 2
    finally:
        release.set()
        worker.join_idle()
        worker.stop()


# -- open_nsfw from its wheel ---------------------------------------------------------------------------

def test_open_nsfw_loads_from_its_wheel_pinned_by_hash_and_scores_frames():
    model = clf.open_nsfw()
    scores = [model.score(picture(s, 256)) for s in range(2)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores) < 0.5  # smooth abstract pictures are not nudity


def test_an_onnx_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    from moderation.text import ModelFileError

    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="sha256"):
        clf.open_nsfw(fake).score(GREEN)


def test_the_worker_rests_after_each_sample_to_keep_its_duty():
    import time

    class Busy:
        category = "x"

        def score(self, pixels):
            time.sleep(0.02)
            return 0.0

    with pytest.raises(ValueError):
        clf.ClassifierWorker(Busy(), max_duty=0)
    worker = clf.ClassifierWorker(Busy(), queue_size=8, max_duty=0.5)
    try:
        t0 = time.perf_counter()
        for i in range(4):
            worker.submit(clf.Sample(GREEN, i, lambda *a: None))
        assert worker.join_idle()
        # 4 x 20 ms of scoring and 3+ rests of ~20 ms between them: about twice the busy time.
        assert time.perf_counter() - t0 >= 0.14
    finally:
        worker.stop()
