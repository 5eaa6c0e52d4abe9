"""The release recipe of the default model ``scdl-abdominal-ct`` (``bench/train_default_model.py`` is its command
line): ``recipe.py`` (the recipe folder, its split rules), ``commands.py`` (the ``scdl`` child commands and the
recipe's console), ``cohort.py`` (step 1: the manifest, the synthesised validation CTs), ``training.py`` (steps
2-3: calibration, ``scdl train`` with a hard time limit), ``scoring.py`` (step 4 and the ship decision:
``scdl segment`` + ``scdl evaluate``, card-ready numbers), ``card.py`` (step 5: the card, its lineage and README;
the prose is data, ``card_text.json`` in the recipe folder), ``package.py`` (steps 5-6: package, float16 weights,
demo check, install), ``build.py`` (the whole job, in order).
"""
