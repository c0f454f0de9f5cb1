"""IDM's model queue: its push and pop schedule, its state in a checkpoint, its one-line error,
the class-aware cross-entropy term, and the queue's training batches drawn from the whole
training set."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from dmcondense.augment import NoAugment
from dmcondense.data.datamodule import ClassBatchDataModule, sample_whole_set
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.methods.idm import ImprovedDistributionMatching
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

NORMALISER = Normaliser([0.5], [0.25])
CPU = torch.device("cpu")


def idm(**knobs) -> ImprovedDistributionMatching:
    images = torch.zeros(3, 1, 4, 4)
    net = build_model("convnet", 1, 3, 4, width=4, depth=1)
    return ImprovedDistributionMatching(net, NoAugment(), images, 3, NORMALISER, **knobs)


def births(module: ImprovedDistributionMatching) -> list[int]:
    return [queued.birth for queued in module.queue.networks]


def test_the_queue_pushes_every_interval_and_drops_the_oldest_when_full() -> None:
    module = idm(net_num=5, initial_networks=3, net_generate_interval=3)
    module.queue.start(CPU)
    assert births(module) == [0, 1, 2]
    seen = {}
    for step in range(19):
        module.renew_queue(step)
        seen[step] = births(module)
    assert seen[0] == seen[2] == [0, 1, 2, 3]  # a push at step 0
    assert seen[3] == [0, 1, 2, 3, 4]  # now full
    assert seen[6] == seen[8] == [1, 2, 3, 4, 5]  # the oldest left
    assert seen[18] == [5, 6, 7, 8, 9]


def test_each_network_is_drawn_from_its_own_birth_and_is_not_the_template() -> None:
    module = idm(net_num=4)
    module.queue.start(CPU)
    again = idm(net_num=4)
    again.queue.start(CPU)
    first = [q.net.classifier.weight for q in module.queue.networks]
    assert all(
        torch.equal(a, q.net.classifier.weight)
        for a, q in zip(first, again.queue.networks, strict=True)
    )
    assert not torch.equal(first[0], first[1])
    assert all(q.net is not module.embed_net for q in module.queue.networks)


def test_the_queue_state_round_trips_with_weights_optimiser_and_accuracy() -> None:
    module = idm(net_num=4, net_generate_interval=1)
    module.queue.start(CPU)
    real = torch.randint(0, 256, (3, 6, 1, 4, 4), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8)  # fmt: skip
    for step in range(3):
        module.renew_queue(step)
        queued = module.queue.networks[-1]
        module.train_queued(queued, *module.step_batches(queued, step, real, torch.arange(3)))
    state = module.queue.state_dict()
    restored = idm(net_num=4, net_generate_interval=1)
    restored.queue.start(CPU)
    restored.queue.load_state_dict(state)
    assert births(restored) == births(module) == [2, 3, 4, 5]
    assert restored.queue.births == 6
    for a, b in zip(module.queue.networks, restored.queue.networks, strict=True):
        for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
            assert torch.equal(pa, pb)
        assert torch.equal(a.seen, b.seen) and torch.equal(a.correct, b.correct)
    trained = restored.queue.networks[-1]
    assert trained.seen.item() == 10 * 18  # model_train_steps x every real image (batch capped)
    momentum = trained.optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert momentum.abs().sum() > 0


def test_a_queue_smaller_than_its_start_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"net_num=2 .* 3 networks"):
        idm(net_num=2, initial_networks=3)


def test_the_cross_entropy_term_is_off_until_the_network_has_trained() -> None:
    module = idm(net_num=4)
    module.queue.start(CPU)
    queued = module.queue.networks[0]
    assert queued.accuracy_percent().item() == 0.0
    queued.correct.fill_(3.0)
    queued.seen.fill_(4.0)
    assert queued.accuracy_percent().item() == 75.0
    queued.reset_accuracy()
    assert queued.accuracy_percent().item() == 0.0


def test_class_cross_entropy_is_the_sum_of_per_class_means() -> None:
    module = idm(net_num=4)
    module.queue.start(CPU)
    net = module.queue.networks[0].net
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 3, net.classifier.in_features, generator=g)
    classes = torch.tensor([2, 0])
    logits = net.classifier(features)
    by_hand = sum(
        torch.nn.functional.cross_entropy(logits[i], torch.full((3,), int(c)))
        for i, c in enumerate(classes)
    )
    assert torch.allclose(module.class_cross_entropy(net, features, classes), by_hand)


# --- the queue's training data -----------------------------------------------------------------


def test_whole_set_rows_hold_distinct_indices_from_their_generator() -> None:
    picks = sample_whole_set(50, (2, 3, 20), generator(0, "real-whole", 4))
    assert picks.shape == (2, 3, 20)
    assert all(len(set(row.tolist())) == 20 for row in picks.view(6, 20))
    assert int(picks.min()) >= 0 and int(picks.max()) < 50
    assert torch.equal(picks, sample_whole_set(50, (2, 3, 20), generator(0, "real-whole", 4)))
    assert not torch.equal(picks, sample_whole_set(50, (2, 3, 20), generator(0, "real-whole", 5)))
    assert not torch.equal(picks[0, 0], picks[0, 1])  # rows are drawn independently
    assert sample_whole_set(5, (1, 8), generator(0, "x")).sort().values.tolist() == [
        [0, 1, 2, 3, 4]
    ]


def test_queue_networks_train_on_whole_set_batches_from_named_generators(monkeypatch) -> None:
    served, trained = [], []
    serve = ClassBatchDataModule.on_after_batch_transfer
    train_queued = ImprovedDistributionMatching.train_queued

    def recording_serve(self, batch, index):
        served.append(serve(self, batch, index))
        return served[-1]

    def recording_train(self, queued, images, labels):
        trained.append((images, labels))
        train_queued(self, queued, images, labels)

    monkeypatch.setattr(ClassBatchDataModule, "on_after_batch_transfer", recording_serve)
    monkeypatch.setattr(ImprovedDistributionMatching, "train_queued", recording_train)

    net = build_model("convnet", 1, 10, 28, width=4, depth=2)
    init = torch.zeros(10, 1, 28, 28)
    module = ImprovedDistributionMatching(
        net,
        NoAugment(),
        init,
        10,
        Normaliser([0.1307], [0.3081]),
        seed=7,
        model_train_steps=3,
        batch_train=40,
        trained_per_step=2,
    )
    assert module.whole_set_batches == (2, 3, 40) and module.real_batches_per_step == 1
    dm = ClassBatchDataModule("mnist_sample", "", 10, 5, 2, seed=7)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)

    assert len(served) == 2 and len(trained) == 2 * 2
    store, labels = dm.train_set.images, dm.train_set.labels
    for step, batch in enumerate(served):
        assert batch["images"].shape == (1, 10, 5, 1, 28, 28)  # the matching's class batches only
        picks = sample_whole_set(len(store), (2, 3, 40), generator(7, "real-whole", step))
        assert torch.equal(batch["whole_images"], store[picks])
        assert torch.equal(batch["whole_labels"], labels[picks])
        for i in range(2):  # the i-th trained network of the step takes the i-th batches
            images, got = trained[2 * step + i]
            assert torch.equal(images, store[picks[i]]) and torch.equal(got, labels[picks[i]])
    # Classes mixed as they come, not 4 a class as a class-balanced draw of 40 would give.
    counts = [torch.bincount(row, minlength=10) for _, y in trained for row in y]
    assert not all(torch.equal(c, torch.full((10,), 4)) for c in counts)


def test_the_step_batches_option_keeps_the_second_class_balanced_round() -> None:
    module = idm(net_num=4, queue_data="step_batches")
    assert module.real_batches_per_step == 2 and module.whole_set_batches == ()
    with pytest.raises(ConfigError, match="unknown method.queue_data 'mixed'"):
        idm(queue_data="mixed")


def fitted_idm(image_step: str, steps: int, counting: list | None = None):
    """IDM on the MNIST sample (3 steps' worth of real batches, factor 1, init from noise),
    fitted `steps` iterations; `counting` collects one entry per image-optimiser step."""
    torch.manual_seed(0)
    net = build_model("convnet", 1, 10, 28, width=4, depth=2)
    init = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    module = ImprovedDistributionMatching(
        net, NoAugment(), init, 10, Normaliser([0.1307], [0.3081]), seed=7,
        model_train_steps=1, batch_train=16, lr_img=0.5, momentum=0.5, image_step=image_step,
    )  # fmt: skip
    dm = ClassBatchDataModule("mnist_sample", "", 10, 5, 2, seed=7)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    losses = []
    real_log = module.log_loss
    module.log_loss = lambda loss: (losses.append(float(loss)), real_log(loss))[1]
    if counting is None:
        trainer.fit(module, datamodule=dm)
    else:
        real_step = torch.optim.SGD.step

        def counting_step(optimizer, *args, **kwargs):
            if optimizer is module.optimizers().optimizer:
                counting.append(1)
            return real_step(optimizer, *args, **kwargs)

        torch.optim.SGD.step = counting_step
        try:
            trainer.fit(module, datamodule=dm)
        finally:
            torch.optim.SGD.step = real_step
    return module, trainer, losses


def test_the_images_step_after_each_class_as_in_the_authors_loop() -> None:
    steps = []
    by_class, trainer, class_losses = fitted_idm("class", 2, steps)
    assert len(steps) == 2 * 10 and trainer.global_step == 2  # a step a class, one an iteration
    by_iteration, _, iteration_losses = fitted_idm("iteration", 2)
    # Before the first class's step nothing has moved, and a class's step leaves the other
    # classes' rows still (no momentum yet): the first iteration's summed loss is the same.
    assert class_losses[0] == pytest.approx(iteration_losses[0], rel=1e-5)
    assert not torch.allclose(by_class.synthetic, by_iteration.synthetic)
    with pytest.raises(ConfigError, match="unknown method.image_step 'batch'"):
        idm(image_step="batch")
