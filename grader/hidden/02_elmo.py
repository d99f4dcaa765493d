"""Hidden checks for lesson 02 (trusted; never copied into a student's sandbox)."""

import torch

from grader import Case, Exercise, close_to
from nblib.models.elmo import Highway, reversed_positions
from nblib.training.classifier import ScalarMix

_g = torch.Generator().manual_seed(20261126)


def _highway(shape: tuple[int, ...], gate_bias: float) -> Case:
    h = shape[-1]
    x = torch.randn(*shape, generator=_g)
    W_t, W_g = torch.randn(h, h, generator=_g) / h**0.5, torch.randn(h, h, generator=_g) / h**0.5
    b_t, b_g = torch.randn(h, generator=_g), torch.full((h,), gate_bias)
    t = torch.sigmoid(x @ W_g.T + b_g)
    return Case("highway", args=(x, W_t, b_t, W_g, b_g), check=close_to(t * torch.relu(x @ W_t.T + b_t) + (1 - t) * x))


def _reverse(b: int, t: int, h: int) -> Case:
    x = torch.randn(b, t, h, generator=_g)
    lengths = torch.randint(1, t + 1, (b,), generator=_g)
    index = reversed_positions(lengths, t)
    return Case("reverse_within_length", args=(x, lengths), expect=x.gather(1, index[..., None].expand_as(x)))


def _mix(n_layers: int, shape: tuple[int, ...]) -> Case:
    layers = [torch.randn(*shape, generator=_g) for _ in range(n_layers)]
    w, gamma = torch.randn(n_layers, generator=_g), torch.tensor(1.7)
    mix = ScalarMix(n_layers)
    with torch.no_grad():
        mix.weights.copy_(w)
        mix.gamma.copy_(gamma)
        expected = mix(layers)
    return Case("scalar_mix", args=(layers, w, gamma), check=close_to(expected))



EXERCISES = {
    "02-highway": Exercise(points=2, references=[Highway], cases=[_highway((4, 6), -2.0), _highway((2, 3, 8), 1.0)]),
    "02-reverse-within-length": Exercise(points=2, references=[reversed_positions], cases=[_reverse(3, 7, 2), _reverse(1, 1, 4), _reverse(4, 5, 3)]),
    "02-scalar-mix": Exercise(points=1, references=[ScalarMix], cases=[_mix(3, (2, 4, 5)), _mix(2, (1, 3, 2))]),
}
