"""Model packages (card + safetensors weights + labels + SHA-256 manifest), the catalog, the user's model
cache, import of plain VNet state dicts (the authors' checkpoints) and verified downloads.

Loading a package never unpickles: weights are safetensors, the card and manifest JSON, the labels CSV;
``.pth`` state dicts are read with ``torch.load(weights_only=True)`` when imported.
"""
