from torchvision._unavailable import unavailable_class

FrozenBatchNorm2d = unavailable_class("ops.misc.FrozenBatchNorm2d")
