"""cogen: an experiment framework for generative models built with a human partner."""
import cogen.config  # noqa: F401  - registers the OmegaConf resolvers the configs use

__version__ = "0.1.0"
