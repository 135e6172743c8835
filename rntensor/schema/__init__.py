"""What columns mean: schema dataclasses, YAML loading and validation, the expression engine."""

from rntensor.schema.expr import parse as parse_expr
from rntensor.schema.load import load_schema, validate
from rntensor.schema.spec import LabelSpec, OutputSpec, ResolvedSchema, Schema

__all__ = [
    "LabelSpec",
    "OutputSpec",
    "ResolvedSchema",
    "Schema",
    "load_schema",
    "parse_expr",
    "validate",
]
