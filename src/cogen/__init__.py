"""cogen: an experiment framework for generative models built with a human partner."""
import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from the Ray launcher, offline or not

import cogen.config  # noqa: F401  - registers the OmegaConf resolvers the configs use

__version__ = "0.1.0"
