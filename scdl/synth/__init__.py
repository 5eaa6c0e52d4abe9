"""CT synthesis from label maps ("anatomy"): a CT-like volume in HU from a label map and a seed.

- :mod:`scdl.synth.tissues`: which tissue each named structure is, and the HU of each tissue per contrast
  phase (measured on real CT where the data allow, literature otherwise; sources in docs/synthesis.md);
- :mod:`scdl.synth.layout`: the label map turned into an *anatomy layout*: structure ids with the body
  outline (-1 = air outside the body) and a depth map (mm to the structure's or the body's border), from
  which kidney cortex/medulla, bone cortex, subcutaneous fat and the muscle wall are derived;
- :mod:`scdl.synth.spatial`: spatial augmentation of a layout before synthesis (elastic, organ shrinking);
- :mod:`scdl.synth.engine`: one synthesis of a layout (per-subject tissue means, correlated texture, bowel
  gas, partial-volume blur, slice-thickness blur, scanner noise, bias field), deterministic for a seed;
- :mod:`scdl.synth.fields`: smooth random fields and correlated noise (also the phantom's, :mod:`scdl.phantom`);
- :mod:`scdl.synth.volume`: whole label maps (SimpleITK) -> synthetic CT images (``scdl synth``).

Training uses the same engine on patches (``scdl.training.data``): each time an anatomy case is sampled, a
fresh image is synthesised in the data-loader worker.
"""
