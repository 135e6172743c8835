"""What columns mean: schema dataclasses, YAML loading and validation, the expression engine."""

from rntensor.schema.spec import LabelSpec, OutputSpec, Schema

__all__ = ["LabelSpec", "OutputSpec", "Schema"]
