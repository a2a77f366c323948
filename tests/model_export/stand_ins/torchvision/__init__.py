"""A stand-in for torchvision, just enough for `import timm` (torchvision cannot be installed here).

timm imports a handful of torchvision names when it loads (transforms, datasets, FrozenBatchNorm2d);
building and running its models never touches them. Each name here is a placeholder that raises
if it is ever called or instantiated, so a test that strays into torchvision fails loudly instead
of computing something else. Only tests that import timm put this folder on sys.path.
"""

__version__ = "0.0.0+stand-in"
