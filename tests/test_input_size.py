"""A wrong input size gives one line naming the size the model expects (it was torch's
``mat1 and mat2 shapes cannot be multiplied``)."""
import pytest
from spikingjelly.activation_based import layer
from torch import nn

from sj_distill import cli, sj, zoo


def fashion_mnist_csnn() -> nn.Module:
    """A user's 28x28 model with a flatten head (the shape of SpikingJelly's Fashion-MNIST
    example): conv-pool-conv-pool, then 8 * 7 * 7 features into the classifier."""
    model = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4), sj.make_neuron(),
        layer.MaxPool2d(2, 2),
        layer.Conv2d(4, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8), sj.make_neuron(),
        layer.MaxPool2d(2, 2),
        layer.Flatten(), layer.Linear(8 * 7 * 7, 10))
    sj.set_step_mode(model, "m")
    return model


def test_info_names_the_input_size_vggsnn_expects(capsys):
    assert cli.main(["info", "vggsnn", "--img-size", "16"]) == 2
    err = capsys.readouterr().err
    assert err == ("sj-distill: error: vggsnn does not take 16x16 inputs: its 'fc' takes 4608 "
                   "features, a 16x16 input gives it 512; it expects 48x48 inputs "
                   "(--img-size 48)\n")


def test_measure_feature_info_infers_the_size_of_a_28x28_model():
    model = fashion_mnist_csnn()
    info = zoo.measure_feature_info(model, ["2", "3", "7"], in_chans=1)
    assert info == [dict(module="2", num_chs=4, reduction=1),
                    dict(module="3", num_chs=4, reduction=2),
                    dict(module="7", num_chs=8, reduction=4)]
    assert zoo.measure_feature_info(model, ["7"], in_chans=1, size=28) == info[2:]


def test_measure_feature_info_names_the_size_when_the_given_one_is_wrong():
    with pytest.raises(ValueError) as err:
        zoo.measure_feature_info(fashion_mnist_csnn(), ["7"], in_chans=1, size=32)
    assert str(err.value) == (
        "measure_feature_info: Sequential does not take 32x32 inputs: its '9' takes 392 "
        "features, a 32x32 input gives it 512; it expects 28x28 inputs (size=28)")


def test_a_probe_that_cannot_run_is_one_line_naming_size():
    with pytest.raises(ValueError) as err:
        zoo.measure_feature_info(fashion_mnist_csnn(), ["7"], in_chans=3)
    message = str(err.value)
    assert message.startswith("measure_feature_info: Sequential: the probe forward on a "
                              "[1, 1, 3, 32, 32] input failed (")
    assert message.endswith("); pass size=<the input height/width the model is built for> and "
                            "in_chans=<its input channels>")
    assert "\n" not in message
