"""SpikingJelly zoo models made multi-step CIFAR students, shared by the rate-BP tests."""
from sj_distill import sj, zoo


def zoo_student(name: str):
    """``spiking_resnet18``, ``sew_resnet18`` (ADD) or ``spiking_vgg11_bn`` from SpikingJelly's
    zoo with LIF neurons (decay 0.2), through :func:`sj_distill.zoo.cifar_student` (10 classes)."""
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg
    sn = dict(spiking_neuron=sj.neuron_factory(kind="lif", decay=0.2, step_mode="m"))
    if name == "spiking_resnet18":
        model = spiking_resnet.spiking_resnet18(**sn)
    elif name == "sew_resnet18":
        model = sew_resnet.sew_resnet18(cnf="ADD", **sn)
    else:
        model = spiking_vgg.spiking_vgg11_bn(**sn)
    return zoo.cifar_student(model, 10, avgpool_vgg=True)
