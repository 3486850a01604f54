"""engine/train/sampling.py: the epoch order, data-parallel shards, jitter, and batches from real photos."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from engine.train.features import IDENTITY, View, render_view
from engine.train.sampling import DecodedImages, epoch_order, image_batch, jitter, open_sets, shard, turn_grid

from train_helpers import tiny_cfg  # noqa: F401  (a fixture)


def test_balance_one_draws_every_item_once():
    order = epoch_order([5, 3], 1.0, random.Random(0))
    assert sorted(order) == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]


def test_balance_zero_draws_the_sets_equally_often():
    sizes = [10, 2]
    order = epoch_order(sizes, 0.0, random.Random(0))
    per_set = Counter(si for si, _ in order)
    assert len(order) == sum(sizes) and per_set == {0: 6, 1: 6}
    assert Counter(i for si, i in order if si == 1) == {0: 3, 1: 3}  # a small set's items repeat evenly
    assert len({i for si, i in order if si == 0}) == 6  # a large set's: a subset, none twice


def test_in_between_balance_weights_by_size_to_the_power():
    sizes = [90, 10]
    per_set = Counter(si for si, _ in epoch_order(sizes, 0.5, random.Random(0)))
    assert per_set[0] + per_set[1] == 100 and per_set == {0: 75, 1: 25}  # sqrt: 9.49 vs 3.16


def test_order_is_shuffled_and_seeded():
    a, b = epoch_order([20, 20], 1.0, random.Random(3)), epoch_order([20, 20], 1.0, random.Random(3))
    assert a == b
    assert a != sorted(a)
    assert epoch_order([20, 20], 1.0, random.Random(4)) != a


def test_shards_are_equal_and_cover_the_epoch():
    order = [(0, i) for i in range(7)]
    parts = [shard(order, 3, r) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    assert set().union(*map(set, parts)) == set(order)
    assert shard(order, 1, 0) == order


def test_jitter_keeps_shape_and_dtype_and_is_seeded():
    img = np.full((8, 8, 3), 128, np.uint8)
    out = jitter(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, jitter(img, np.random.default_rng(0)))
    assert not np.array_equal(out, img)


@pytest.mark.slow
def test_image_batch_from_real_photos(tiny_cfg):
    from engine.models import image_processor
    from engine.models.tokenizer import build_tokenizer

    cfg = tiny_cfg()
    sets = open_sets(cfg)
    assert [len(s.train) for s in sets] == [6, 6] and [len(s.val) for s in sets] == [4, 4]
    images = DecodedImages(sets)
    assert images(0, 1) is images(0, 1)  # decoded once
    batch = image_batch([(0, 0), (1, 2), (0, 1)], images, build_tokenizer(), image_processor(64), image_size=64,
                        augment=True, rng=random.Random(0))
    assert batch.pixel_values.shape == (3, 3, 64, 64) and batch.target.shape == (3, 64, 64)
    assert batch.input_ids.shape == batch.attention_mask.shape and batch.input_ids.shape[0] == 3
    assert 0.0 <= batch.target.min() and batch.target.max() <= 1.0


def test_a_set_without_prompts_is_refused(shared_data):
    from engine.train import DataSpec, make_config

    with pytest.raises(ValueError, match="has no prompts"):
        open_sets(make_config(None, data=[DataSpec(str(shared_data / "cracks"), ())]))


def test_pick_prompt_draws_negatives_only_from_other_sets():
    from engine.train.sampling import TrainSet, pick_prompt

    sets = [TrainSet(None, None, None, ("segment crack", "segment wall crack")),
            TrainSet(None, None, None, ("segment taping area",))]
    rng = random.Random(0)
    draws = [pick_prompt(0, sets, 0.3, rng) for _ in range(2000)]
    negatives = [p for p, negative in draws if negative]
    assert set(negatives) == {"segment taping area"}
    assert {p for p, negative in draws if not negative} == {"segment crack", "segment wall crack"}
    assert 0.26 < len(negatives) / len(draws) < 0.34
    assert not any(negative for _, negative in (pick_prompt(0, sets[:1], 0.9, rng) for _ in range(200)))
    assert not any(negative for _, negative in (pick_prompt(1, sets, 0.0, rng) for _ in range(200)))
    # two sets of one concept (say real and generated cracks) never give each other negatives
    same = [sets[0], TrainSet(None, None, None, ("segment crack",)), sets[1]]
    draws = [pick_prompt(0, same, 0.5, rng) for _ in range(500)]
    assert {p for p, negative in draws if negative} == {"segment taping area"}
    assert {p for p, negative in (pick_prompt(1, same, 0.5, rng) for _ in range(500)) if negative} == \
        {"segment taping area"}
    assert not any(negative for _, negative in (pick_prompt(0, same[:2], 0.9, rng) for _ in range(200)))


def test_negatives_begin_at_negative_start():
    from engine.train import make_config
    from engine.train.sampling import negative_rate_at

    cfg = make_config(None, negative_rate=0.25, negative_start=0.3)
    assert [negative_rate_at(cfg, step, 100) for step in (0, 29, 30, 99)] == [0.0, 0.0, 0.25, 0.25]
    assert negative_rate_at(make_config(None, negative_rate=0.25), 0, 100) == 0.25


def _patch_tokens(img: np.ndarray, patch: int) -> torch.Tensor:
    """Stand-in activations: a class token, then each patch's mean colour, row by row (what a ViT's grid holds)."""
    h, w, _ = img.shape
    grid = img.reshape(h // patch, patch, w // patch, patch, 3).mean(axis=(1, 3)).reshape(-1, 3)
    return torch.from_numpy(np.concatenate([np.full((1, 3), 7.0), grid]).astype(np.float32))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_turning_the_token_grid_matches_turning_the_photo(flip, turns):
    rng = np.random.default_rng(turns)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = rng.random((64, 64)) > 0.7
    img, msk = render_view(image, mask, IDENTITY, 64)
    turned_img, turned_msk = render_view(image, mask, View(flip=flip, turns=turns), 64)
    acts, m = turn_grid([_patch_tokens(img.astype(np.float32), 16)], torch.from_numpy(msk), flip, turns)
    assert torch.allclose(acts[0], _patch_tokens(turned_img.astype(np.float32), 16))
    assert torch.equal(m, torch.from_numpy(turned_msk))
    assert acts[0][0, 0] == 7.0  # the class token stays first


def test_the_holdout_is_kept_out_of_training_and_the_same_for_every_seed(shared_data):
    from engine.train import make_config

    whole = open_sets(make_config(None))
    held = open_sets(make_config(None, holdout_share=0.1, seed=0))
    again = open_sets(make_config(None, holdout_share=0.1, seed=7, max_train_images=20))
    for w, h, a in zip(whole, held, again):
        assert w.holdout is None
        assert set(h.train.ids) | set(h.holdout.ids) == set(w.train.ids)
        assert not set(h.train.ids) & set(h.holdout.ids)
        assert abs(len(h.holdout) - 0.1 * len(w.train)) <= 2
        assert a.holdout.ids == h.holdout.ids and set(a.train.ids) <= set(h.train.ids)
        assert h.val.ids == w.val.ids
    from engine.data import open_dataset
    from engine.train.sampling import split_holdout

    cracks = open_dataset(shared_data / "cracks", split="train", skip_bad=True)  # as `engine calibrate` opens it
    assert split_holdout(cracks, 0.1)[1].ids == held[0].holdout.ids
    with pytest.raises(ValueError, match="holdout_share"):
        make_config(None, calibrate_on="holdout")
    with pytest.raises(ValueError, match="holdout_share"):
        make_config(None, holdout_share=1.0)


def test_synthetic_walls_join_the_training_split_only(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec

    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)  # generated walls under tmp_path
    plain = open_sets(tiny_cfg())
    spec = plain[1].spec
    with_walls = open_sets(tiny_cfg(data=[plain[0].spec, DataSpec(spec.path, spec.prompts,
                                                                  synthetic_concept="taping area", synthetic_walls=3)]))
    real, joined = plain[1], with_walls[1]
    assert len(joined.train) == len(real.train) + 3 and joined.train.ids[:len(real.train)] == real.train.ids
    assert all(i.startswith("synth_taping_") for i in joined.train.ids[len(real.train):])
    assert joined.val.ids == real.val.ids and len(with_walls[0].train) == len(plain[0].train)
    assert (tmp_path / ".cache" / "synthetic" / "taping-area-3" / "masks").is_dir()


def test_mixed_walls_are_never_negatives(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec
    from engine.train.sampling import pick_prompt

    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)
    plain = open_sets(tiny_cfg())
    spec = plain[0].spec
    sets = open_sets(tiny_cfg(data=[DataSpec(spec.path, spec.prompts, synthetic_concept="crack", synthetic_walls=3,
                                             synthetic_mixed=2), plain[1].spec]))
    n_real = len(plain[0].train)
    assert sets[0].mixed == {n_real + 1, n_real + 2} and sets[1].mixed == frozenset()
    assert all("_mixed_" in sets[0].train.ids[i] for i in sets[0].mixed)
    rng = random.Random(0)
    for i in sets[0].mixed:  # a mixed wall keeps its own prompts, whatever the rate
        assert not any(pick_prompt(0, sets, 0.99, rng, i)[1] for _ in range(100))
    assert sum(pick_prompt(0, sets, 0.99, rng, n_real)[1] for _ in range(100)) > 90  # the plain wall is one
    assert (tmp_path / ".cache" / "synthetic" / "crack-3-mixed-2" / "masks").is_dir()


def test_hard_negative_weights_follow_the_false_alarm_and_keep_the_rate():
    from engine.train.sampling import hard_negative_weights

    areas = [0.0, 0.1, 0.3]
    assert hard_negative_weights(areas, 0.0).tolist() == [1.0, 1.0, 1.0]
    full = hard_negative_weights(areas, 1.0)
    assert full.tolist() == pytest.approx([0.0, 0.75, 2.25]) and full.mean() == pytest.approx(1.0)
    assert hard_negative_weights(areas, 0.5).tolist() == pytest.approx([0.5, 0.875, 1.625])
    assert hard_negative_weights([0.0, 0.0], 1.0).tolist() == [1.0, 1.0]  # no false alarm anywhere: all alike


def test_a_hard_negative_is_drawn_as_a_negative_more_often():
    from engine.train.sampling import MAX_NEGATIVE_RATE, TrainSet, pick_prompt

    sets = [TrainSet(None, None, None, ("segment crack",), negative_weights=np.array([0.0, 1.0, 3.0])),
            TrainSet(None, None, None, ("segment taping area",))]
    rng = random.Random(0)
    share = {i: sum(pick_prompt(0, sets, 0.3, rng, i)[1] for _ in range(4000)) / 4000 for i in range(3)}
    assert share[0] == 0.0 and abs(share[1] - 0.3) < 0.03 and abs(share[2] - MAX_NEGATIVE_RATE) < 0.03


def test_pasted_composites_follow_the_real_photos_and_are_never_negatives(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec
    from engine.train.sampling import pick_prompt

    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)
    plain = open_sets(tiny_cfg())
    cracks, joints = plain[0].spec, plain[1].spec
    sets = open_sets(tiny_cfg(data=[cracks, DataSpec(joints.path, joints.prompts, pasted_lines=4,
                                                     pasted_lines_from=cracks.path)]))
    real = plain[1].train
    n = len(real)
    assert len(sets[1].train) == n + 4 and sets[1].train.ids[:n] == real.ids
    assert sets[1].mixed == set(range(n, n + 4)) and sets[0].mixed == frozenset()
    for k in range(4):  # each composite is labelled with its base photo's taping mask
        assert np.array_equal(sets[1].train.mask(n + k), real.mask(k % n))
    rng = random.Random(0)
    assert not any(pick_prompt(1, sets, 0.99, rng, n)[1] for _ in range(100))  # a crack is in it: no negative
    assert sum(pick_prompt(1, sets, 0.99, rng, 0)[1] for _ in range(100)) > 90
    assert len(list((tmp_path / ".cache" / "pasted").glob("*/masks/*.png"))) == 4


def test_pasted_onto_another_set_labels_the_lines_on_the_same_composites(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec

    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)
    plain = open_sets(tiny_cfg())
    cracks, joints = plain[0].spec, plain[1].spec
    sets = open_sets(tiny_cfg(data=[
        DataSpec(cracks.path, cracks.prompts, pasted_lines=3, pasted_lines_onto=joints.path),
        DataSpec(joints.path, joints.prompts, pasted_lines=3, pasted_lines_from=cracks.path)]))
    n_cracks, n_joints = len(plain[0].train), len(plain[1].train)
    assert sets[0].mixed == set(range(n_cracks, n_cracks + 3)) and len(sets[0].train) == n_cracks + 3
    for k in range(3):
        lines = sets[0].train.mask(n_cracks + k)
        assert 0 < lines.mean() <= 0.08  # the pasted cracks, not the joints photo's taping box
        assert not np.array_equal(lines, sets[1].train.mask(n_joints + k))
        # one composite, two labels: the crack set's copy is the joints set's, pixel for pixel
        assert sets[0].train.items[n_cracks + k].image_path.read_bytes() == \
            sets[1].train.items[n_joints + k].image_path.read_bytes()


def test_generated_walls_receive_lines_in_turn_with_the_real_photos(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec
    from engine.train.sampling import alternate

    assert alternate(3, 2) == [0, 3, 1, 4, 2] and alternate(2, 4) == [0, 2, 1, 3, 4, 5] and alternate(0, 2) == [0, 1]
    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)
    plain = open_sets(tiny_cfg())
    cracks, joints = plain[0].spec, plain[1].spec
    sets = open_sets(tiny_cfg(data=[cracks, DataSpec(joints.path, joints.prompts, synthetic_concept="taping area",
                                                     synthetic_walls=2, pasted_lines=4, pasted_lines_from=cracks.path,
                                                     pasted_on_walls=True)]))
    train, n = sets[1].train, len(plain[1].train)
    assert len(train) == n + 2 + 4 and sets[1].mixed == set(range(n + 2, n + 6))
    # composites 0..3 take real photo 0, wall 0, real photo 1, wall 1, each with its own taping mask
    for k, base in enumerate([0, n, 1, n + 1]):
        assert np.array_equal(train.mask(n + 2 + k), train.mask(base))


def test_pasted_lines_must_name_another_set_of_the_run(tiny_cfg, monkeypatch, tmp_path):
    import engine.train.sampling as sampling
    from engine.train import DataSpec

    monkeypatch.setattr(sampling, "in_repo", lambda path: tmp_path / path)
    joints = open_sets(tiny_cfg())[1].spec
    with pytest.raises(ValueError, match="pasted_lines_from"):
        tiny_cfg(data=[DataSpec(joints.path, joints.prompts, pasted_lines=2)])
    with pytest.raises(ValueError, match="either"):  # from and onto at once
        tiny_cfg(data=[DataSpec(joints.path, joints.prompts, pasted_lines=2, pasted_lines_from="a",
                                pasted_lines_onto="b")])
    with pytest.raises(ValueError, match="not another data set of this run"):
        open_sets(tiny_cfg(data=[DataSpec(joints.path, joints.prompts, pasted_lines=2,
                                          pasted_lines_from=joints.path)]))
