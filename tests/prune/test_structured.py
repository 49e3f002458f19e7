import torch

from bird_bone.calibration.neurons import cluster_neurons, neuron_values
from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.structured import remove_neurons, select_neurons


def test_neuron_value_is_mean_activation_times_down_column_norm():
    down = torch.tensor([[3.0, 0.0], [4.0, 1.0]])  # [hidden, neurons]
    assert torch.allclose(neuron_values(down, torch.tensor([2.0, 5.0])), torch.tensor([10.0, 5.0]))


def test_per_cluster_cap_limits_removal():
    values = torch.arange(20, dtype=torch.float)  # neuron 0 is the least valuable
    ids = torch.tensor([0] * 10 + [1] * 10)
    removed = select_neurons(values, ids, count=4, max_fraction_per_cluster=0.2)
    assert removed.tolist() == [0, 1, 10, 11]  # cluster 0 is capped at 2, the rest come from cluster 1
    assert len(select_neurons(values, ids, count=10, max_fraction_per_cluster=0.1)) == 2


def test_clusters_follow_activation_patterns_and_are_seeded():
    base = torch.randn(2, 64)
    patterns = torch.cat([base[0] + 0.05 * torch.randn(10, 64), base[1] + 0.05 * torch.randn(10, 64)])
    ids = cluster_neurons(patterns, clusters=2, seed=0)
    assert len(set(ids[:10].tolist())) == 1 and len(set(ids[10:].tolist())) == 1 and ids[0] != ids[10]
    assert torch.equal(ids, cluster_neurons(patterns, clusters=2, seed=0))


def test_remove_neurons_shrinks_mlps_and_round_trips_through_a_checkpoint(tmp_path, tiny_model, tiny_tokenizer):
    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    kept = remove_neurons(tiny_model, windows, fraction=0.25, max_fraction_per_cluster=0.5, clusters=2)
    assert mlp_widths(tiny_model) == [48, 48]  # 64 neurons, 16 removed per layer
    assert all(len(v) == 48 and v.unique().numel() == 48 for v in kept.values())
    kept = remove_neurons(tiny_model, windows, fraction=0.5, max_fraction_per_cluster=0.5, clusters=2, kept=kept)
    assert mlp_widths(tiny_model) == [32, 32] and kept["model.layers.0.mlp"].max() < 64
    expected = tiny_model(windows).logits
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.metadata["mlp_widths"] == [32, 32]
    assert torch.allclose(loaded.model(windows).logits, expected, atol=1e-5)


def test_kept_widths_round_down_to_a_multiple(tiny_model):
    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    remove_neurons(tiny_model, windows, fraction=0.3, max_fraction_per_cluster=0.5, clusters=2, width_multiple=16)
    assert mlp_widths(tiny_model) == [32, 32]  # 64 - round(19.2) = 45 kept, rounded down to 32
