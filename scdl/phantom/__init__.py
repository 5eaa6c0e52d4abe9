"""Synthetic abdominal CT cohorts with Synapse organ labels (``scdl phantom``).

- :mod:`~scdl.phantom.generator`: :func:`generate_case` (one subject: HU image, labels, geometry);
- :mod:`~scdl.phantom.cohort`: :func:`write_cohort` (images/, labels/, manifest.csv, phantom.json);
- :mod:`~scdl.phantom.config`: :class:`PhantomConfig` (every setting, JSON round trip);
- :mod:`~scdl.phantom.anatomy`: the template anatomy (LPS mm); :mod:`~scdl.phantom.shapes`: primitives;
- :mod:`~scdl.phantom.hu_table`: measured HU defaults; :mod:`~scdl.phantom.measure`: how they were measured;
- smooth random fields and correlated noise come from :mod:`scdl.synth.fields` (shared with the CT synthesis).
"""

from scdl.phantom.cohort import Split, default_split, write_cohort
from scdl.phantom.config import PhantomConfig
from scdl.phantom.generator import PhantomCase, generate_case

__all__ = ["PhantomCase", "PhantomConfig", "Split", "default_split", "generate_case", "write_cohort"]
