"""The demo training script's batches: what the model is trained on (training itself takes an hour)."""

from __future__ import annotations

import pytest
import torch

from framefusion.synthetic import ANSWERS
from scripts.train_demo import IGNORE, SyntheticBatches, TrainConfig, build_demo_model, main, train


@pytest.fixture(scope="module")
def processor():
    return build_demo_model()[1]


def test_each_batch_draws_one_frame_count_from_the_config(processor):
    config = TrainConfig(steps=6, batch_size=2, frame_counts=(8, 12, 16), workers=0)
    batches = list(SyntheticBatches(processor, config))
    assert len(batches) == 6
    drawn = []
    for batch in batches:
        temporal = batch["video_grid_thw"][:, 0].tolist()  # frame pairs per clip
        assert len(set(temporal)) == 1, "clips of a batch differ in frame count"
        drawn.append(2 * temporal[0])
    assert set(drawn) <= {8, 12, 16} and len(set(drawn)) > 1
    again = [2 * int(b["video_grid_thw"][0, 0]) for b in SyntheticBatches(processor, config)]
    assert again == drawn  # fixed by the seed


def test_batches_follow_the_task_mix_and_carry_loss_only_on_answers(processor):
    mix = ("shape", "color", "shape")
    config = TrainConfig(steps=2, batch_size=3, task_mix=mix, frame_counts=(8,))
    known_answers = {answer for answers in ANSWERS.values() for answer in answers}
    tasks = []
    for batch in SyntheticBatches(processor, config):
        tasks += batch["tasks"]
        for labels in batch["labels"]:
            answer = labels[labels != IGNORE]
            assert answer[-1] == processor.tokenizer.eos_token_id  # the word, then end of turn
            assert processor.tokenizer.decode(answer[:-1]).strip() in known_answers
    assert tasks == list(mix) * 2


@pytest.mark.parametrize("counts", [(), (7,), (0,)])
def test_odd_or_missing_frame_counts_are_refused(counts):
    with pytest.raises(ValueError, match="even"):
        TrainConfig(frame_counts=counts)


def test_training_is_reproducible_from_the_seed():
    """Two short runs with one seed end on the same weights (a run with another seed does not)."""
    def trained(seed: int) -> dict:
        model, processor = build_demo_model(seed=seed)
        config = TrainConfig(seed=seed, steps=3, batch_size=2, warmup=1, frame_counts=(8,), workers=0, log_every=3)
        train(model, processor, config, log=lambda line: None)
        return {name: tensor.clone() for name, tensor in model.state_dict().items()}

    first, again, other = trained(0), trained(0), trained(1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_command_line_refuses_an_odd_frame_count(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--out", "unused", "--frames", "8", "9"])
    assert exited.value.code == 2
    assert "even" in capsys.readouterr().err
