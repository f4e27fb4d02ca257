"""What training checks of a config before any data is read: every key's range (the config may have been changed
in code since it was loaded) and what the model family knows, all without building anything."""

from medseg.config import Config, validate_config
from medseg.models import check_model_config


def check_config(cfg: Config) -> None:
    validate_config(cfg)
    check_model_config(cfg)
