"""The contract both halves share: what `model_export/` writes and `service/` reads, and the one
image transform both run. It imports neither torch nor any web framework (a test holds it to that),
so training never loads Starlette and the serving image never needs torch.

    bundle        model.json (BundleManifest), the graphs' tensor names, load_bundle
    images        bytes → checked, decoded, resized pixels: THE transform (train, check, serve)
    image_costs   what an encoded image will cost, priced from its header before it is decoded
    memory        the byte budget concurrent decodes share; the process's allocator
    attention     the rollout as a patch grid, and the heat-map drawn over a picture
    errors        the error tree, its status table, and the one wording of validation errors
    geometry      a size (S or (H, W)) and the token grid a stride makes of it
"""
