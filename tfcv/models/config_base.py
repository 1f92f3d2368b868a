"""What every frozen model config shares: its dict form, for config.json.

Runs record their model config as JSON (`tfcv.training.gan_trainer`), where
tuples come back as lists; `from_dict` turns them back into tuples, and
fields added to a config since a run began take their defaults.
"""

import dataclasses


class ConfigDict:
    """Mixin for frozen config dataclasses: `to_dict`, `from_dict`, `coerce`.

    Subclasses name a preset in `_EXAMPLE` for the error message.
    """

    _EXAMPLE = ""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Inverse of `to_dict` (lists, as JSON gives them, become tuples)."""
        return cls(
            **{
                key: tuple(value) if isinstance(value, list) else value
                for key, value in dict(values).items()
            }
        )

    @classmethod
    def coerce(cls, config):
        """Returns `config` as a `cls` (it may be its dict form).

        Raises:
          ValueError: if `config` is neither.
        """
        if isinstance(config, dict):
            return cls.from_dict(config)
        if not isinstance(config, cls):
            example = (
                f" or a preset such as {cls._EXAMPLE}" if cls._EXAMPLE else ""
            )
            raise ValueError(
                f"`config` must be a {cls.__name__} or its dict form, got "
                f"{type(config).__name__}; build one with "
                f"{cls.__name__}(...){example}."
            )
        return config
