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


def test_each_adversarial_test_set_has_its_own_size_and_is_drawn_from_the_nature_set(tmp_path):
    import pytest

    from fedsec.attacks.params import parse_attack_sizes
    from fedsec.errors import ConfigError
    from fedsec.evaluation import adversarial_test_sets, attack_subset
    from fedsec.experiment import new_model

    config = RunConfig.from_run_config(
        {
            "dataset": "synthetic",
            "model": "lenet",
            "eval-attack-size": 50,
            "eval-attack-sizes": "bim=20",
            "attack-params": "bim.max_iter=2",
            "cache-dir": str(tmp_path),
        }
    )
    bundle = load_bundle(config)
    test = server_data(config, bundle)["test"]
    model = new_model(config, bundle)
    sets = adversarial_test_sets(
        config, model, test, ["fgsm", "bim"], num_classes=10, params={"bim": {"max_iter": 2}}
    )
    assert {name: len(s) for name, s in sets.items()} == {"Nature": 50, "FGSM": 50, "BIM": 20}
    nature = {row.numpy().tobytes() for row in sets["Nature"].x}
    bim_sources = adversarial_test_sets(
        config.replace(eval_attack_sizes="fgsm=20"), model, test, ["fgsm"], num_classes=10, params={}
    )
    assert torch.equal(bim_sources["FGSM"].y, sets["BIM"].y)  # the same 20 images for every 20-image set
    smaller = {row.numpy().tobytes() for row in attack_subset(test, size=20, seed=config.seed).x}
    assert len(smaller) == 20 and smaller < nature  # a 20-image set's sources are Nature images
    with pytest.raises(ConfigError, match=r"'eval-attack-sizes'.*unknown attack 'simbaa'"):
        parse_attack_sizes("simbaa=500")
    with pytest.raises(ConfigError, match="eval-attack-sizes"):
        RunConfig.from_run_config({"eval-attack-sizes": "simba"})
    assert parse_attack_sizes("simba=500, cw2=500") == {"simba": 500, "cw2": 500}
