from torchvision._unavailable import unavailable_class

# The five optional datasets timm probes with try/except ImportError are left out: it skips them.
CIFAR10 = unavailable_class("datasets.CIFAR10")
CIFAR100 = unavailable_class("datasets.CIFAR100")
MNIST = unavailable_class("datasets.MNIST")
KMNIST = unavailable_class("datasets.KMNIST")
FashionMNIST = unavailable_class("datasets.FashionMNIST")
ImageFolder = unavailable_class("datasets.ImageFolder")
