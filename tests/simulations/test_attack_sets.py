"""The server's attack test sets: what each malicious objective is measured on."""

import torch

from fedsec.config import RunConfig
from fedsec.experiment import load_bundle, server_data
from simulations.server_app import attack_test_sets


def sets_for(**overrides):
    config = RunConfig.from_run_config(
        {"dataset": "synthetic", "model": "lenet", "num-clients": 4, "attack-source": 5, "attack-target": 7}
        | overrides
    )
    bundle = load_bundle(config)
    test = server_data(config, bundle)["test"]
    return test, attack_test_sets(config, bundle, test)


def test_a_whole_class_flip_is_measured_on_the_source_class_and_on_every_other_class_with_true_labels():
    test, sets = sets_for(roles="boosted:3")

    source = test.y == 5
    assert set(sets) == {"targeted_accuracy", "other_class_accuracy"}
    assert torch.equal(sets["targeted_accuracy"].x, test.x[source])
    assert torch.all(sets["targeted_accuracy"].y == 7)
    assert torch.equal(sets["other_class_accuracy"].x, test.x[~source])
    assert torch.equal(sets["other_class_accuracy"].y, test.y[~source])


def test_chosen_targeted_samples_and_backdoors_get_no_other_class_set():
    _, targeted = sets_for(roles="colluding-lk:3", **{"targeted-samples": 5})
    _, backdoor = sets_for(roles="badnets:3")

    assert set(targeted) == {"targeted_accuracy", "class_flip_rate"}
    assert set(backdoor) == {"asr"}
