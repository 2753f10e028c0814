"""The networks: MLPs, conv nets for images, user trunks and decoders, and their contracts."""

import pyro
import pytest
import torch
from torch import nn

import pyro_vae as pv
from pyro_vae.model.networks import ConvDecoder, ConvEncoder, Trunk


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (3, 8, 8), (1, 7, 9)])
def test_conv_nets_pass_leading_dimensions_through(shape):
    d = int(torch.tensor(shape).prod())
    enc, dec = ConvEncoder(shape, (4, 8), 16), ConvDecoder(5, shape, (8, 4), 16, out_channels=2)
    assert enc(torch.zeros(3, d)).shape == (3, 16)
    assert dec(torch.zeros(5)).shape == (2 * d,)
    assert dec(torch.zeros(4, 3, 5)).shape == (4, 3, 2 * d)


def test_conv_decoder_rows_are_independent_of_the_batch():
    dec = ConvDecoder(3, (1, 8, 8), (4, 2), 8)
    z = torch.randn(2, 5, 3)
    torch.testing.assert_close(dec(z)[1, 2], dec(z[1, 2]))


def test_image_shape_must_match_x_dim():
    with pytest.raises(ValueError, match="C\\*H\\*W = x_dim = 784"):
        pv.VAE(784, net="conv", image_shape=(1, 28, 27))
    with pytest.raises(ValueError, match="conv nets need the images' shape"):
        pv.VAE(784, net="conv")


def test_a_conv_vae_records_its_networks_and_round_trips(tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE(64, 3, (16,), net="conv", image_shape=(8, 8), conv_channels=(4, 8), guide="iaf")
    assert (vae.config.encoder, vae.config.decoder, vae.config.image_shape) == (
        "conv",
        "conv",
        (1, 8, 8),
    )
    assert isinstance(vae.encoder.net.hidden, ConvEncoder) and isinstance(vae.decoder, ConvDecoder)
    pv.save_checkpoint(tmp_path / "c.pt", vae)
    loaded = pv.load_model(tmp_path / "c.pt")
    x = torch.bernoulli(torch.rand(6, 64))
    torch.manual_seed(1)
    a = pv.log_likelihood(vae.model, vae.guide, x, num_samples=8)
    torch.manual_seed(1)
    b = pv.log_likelihood(loaded.model, loaded.guide, x, num_samples=8)
    assert torch.equal(a, b)


class _MyTrunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 10), nn.Tanh())

    def forward(self, x):
        return self.net(x)


class _MyDecoder(nn.Module):
    def __init__(self, flat_batch=False):
        super().__init__()
        self.lin, self.flat_batch = nn.Linear(3, 6), flat_batch

    def forward(self, z):
        if self.flat_batch:  # breaks the contract: assumes z is [B, z_dim]
            return self.lin(z.reshape(len(z), -1)[:, :3])
        return self.lin(z)


def test_user_networks_are_used_recorded_and_passed_again(tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE(6, 3, encoder=_MyTrunk(), decoder=_MyDecoder())
    assert vae.encoder.net.feature_dim == 10  # found by one dummy pass
    assert (vae.config.encoder, vae.config.decoder) == ("custom:_MyTrunk", "custom:_MyDecoder")
    pv.save_checkpoint(tmp_path / "c.pt", vae)
    with pytest.raises(ValueError, match="user-written encoder"):
        pv.load_model(tmp_path / "c.pt")
    loaded = pv.load_model(tmp_path / "c.pt", encoder=_MyTrunk(), decoder=_MyDecoder())
    for p, q in zip(vae.parameters(), loaded.parameters()):
        assert torch.equal(p, q)


def test_a_decoder_that_breaks_the_contract_is_named_at_construction():
    with pytest.raises(ValueError, match=r"the decoder must map z \[\.\.\., 3\] with any leading"):
        pv.VAE(6, 3, decoder=_MyDecoder(flat_batch=True))


def test_a_trunk_that_does_not_give_features_is_refused():
    with pytest.raises(ValueError, match="features \\[B, F\\]"):
        Trunk(nn.Flatten(0), 6, 4)


def test_a_whole_guide_and_an_encoder_trunk_are_not_both_taken():
    with pytest.raises(ValueError, match="either a whole guide or an encoder trunk"):
        pv.VAE(6, 3, guide=pv.guides.NormalGuide(6, 3, (8,)), encoder=_MyTrunk())


def test_the_vamp_prior_works_with_a_user_guide():
    class Plain(pv.Guide):
        def __init__(self):
            super().__init__(6, 3)
            self.lin = nn.Linear(6, 6)

        def forward(self, x):
            loc, raw = self.lin(x).chunk(2, -1)
            return pyro.distributions.Normal(loc, raw.exp()).to_event(1)

    vae = pv.VAE(6, 3, prior="vamp", guide=Plain(), num_components=4)
    x = torch.bernoulli(torch.rand(5, 6))
    assert torch.isfinite(pv.log_likelihood(vae.model, vae.guide, x, num_samples=3)).all()


def test_net_names_are_canonical_and_conv_needs_a_dense_size():
    vae = pv.VAE(64, 3, (16,), net="Conv", image_shape=(8, 8), conv_channels=(2, 4))
    assert (vae.config.encoder, vae.config.decoder) == ("conv", "conv")
    with pytest.raises(ValueError, match="unknown net 'cnn'; valid nets are: conv, mlp"):
        pv.VAE(64, 3, net="cnn")
    with pytest.raises(ValueError, match="give hidden_dims at least one size"):
        pv.VAE(64, 3, (), net="conv", image_shape=(8, 8))


def test_a_subclass_checkpoint_is_not_rebuilt_as_its_base_class(tmp_path):
    class Tempered(pv.VAE):
        pass

    pv.save_checkpoint(tmp_path / "c.pt", Tempered(6, 3, (8,)))
    with pytest.raises(pv.CheckpointError, match="holds a Tempered"):
        pv.load_model(tmp_path / "c.pt")
    assert type(pv.load_model(tmp_path / "c.pt", model=Tempered(6, 3, (8,)))) is Tempered


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("guide", ["normal", "iaf"])
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_every_built_in_combination_resumes_and_round_trips(net, guide, layers, tmp_path):
    config = pv.ModelConfig(
        16, 3, (8,), guide=guide, encoder=net, decoder=net, image_shape=(1, 4, 4),
        conv_channels=(2, 4), latent_layers=layers, z2_dim=2, hidden2_dims=(4,),
    )  # fmt: skip
    x = torch.bernoulli(torch.rand(48, 16, generator=torch.Generator().manual_seed(0)))
    cfg = pv.TrainConfig(epochs=2, batch_size=16, eval_every=0, progress=False)

    def run(epochs, out, resume=False):
        torch.manual_seed(0)
        model = pv.build_model(config)
        again = pv.TrainConfig(**{**cfg.to_dict(), "epochs": epochs})
        res = pv.train(model, x, config=again, out_dir=out, resume=resume)
        return model, [r["train_elbo"] for r in res.history]

    whole, full = run(2, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed, again = run(2, tmp_path / "b", resume=True)
    assert again == full
    loaded = pv.load_model(tmp_path / "b")
    assert type(loaded) is type(whole) and loaded.config == whole.config
    lls = []
    for m in (whole, resumed, loaded):
        torch.manual_seed(3)
        lls.append(pv.log_likelihood(m.model, m.guide, x[:8], num_samples=4))
    assert torch.equal(lls[0], lls[1]) and torch.equal(lls[0], lls[2])
