from torchvision._unavailable import unavailable_class

ToTensor = unavailable_class("transforms.ToTensor")  # timm subclasses it (MaybeToTensor)
