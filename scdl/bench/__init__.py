"""Benchmarks that train and score models end to end (``scdl bench ...``).

- :mod:`~scdl.bench.ssl_benchmark`: the imbalanced semi-supervised benchmark and ablation
  (supervised vs CPS vs CPS+SCDL on one phantom cohort, several seeds): :func:`run_benchmark`;
- :mod:`~scdl.bench.ssl_configs`: the compared configurations (framework + SCDL ablation flags);
- :mod:`~scdl.bench.ssl_settings`: every setting of a benchmark run and the keys that identify its outputs;
- :mod:`~scdl.bench.ssl_cohort`, :mod:`~scdl.bench.ssl_train`, :mod:`~scdl.bench.ssl_score`: cohort, one
  training run (a ``python -m scdl train`` child process), scoring of the test cases;
- :mod:`~scdl.bench.ssl_aggregate`: the statistics (pure NumPy); :mod:`~scdl.bench.ssl_report`: JSON,
  Markdown table and bar chart.
"""
