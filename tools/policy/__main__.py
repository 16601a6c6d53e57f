"""Entry point of the `mlflow-platform-security` policy pack: wraps the plain rules of rules.py.

Run it against a stack with `pulumi preview --policy-pack policy` (or `pulumi up --policy-pack policy`).
The Pulumi CLI runs this file with the pack directory on sys.path, hence the top-level `rules` import.
"""

from collections.abc import Mapping

from pulumi_policy import (EnforcementLevel, PolicyPack, ResourceValidationArgs, ResourceValidationPolicy,
                           StackValidationArgs, StackValidationPolicy)
from pulumi_policy.deserialize import serialize_properties
from pulumi_policy.proxy import (UNKNOWN_ARCHIVE_VALUE, UNKNOWN_ARRAY_VALUE, UNKNOWN_ASSET_VALUE,
                                 UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_OBJECT_VALUE,
                                 UNKNOWN_STRING_VALUE)

from rules import POLICIES, STACK_POLICIES, UNKNOWN, StackResource

_UNKNOWN_SENTINELS = {UNKNOWN_ARCHIVE_VALUE, UNKNOWN_ARRAY_VALUE, UNKNOWN_ASSET_VALUE, UNKNOWN_BOOLEAN_VALUE,
                      UNKNOWN_NUMBER_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE}


def known(value):
    """Plain data with preview-time unknowns as rules.UNKNOWN.

    The runtime's props raise on any unknown value read, which would skip the whole policy for the
    resource during preview; rules decide per field instead (e.g. an image still to be built).
    """
    if isinstance(value, Mapping):
        return {key: known(item) for key, item in value.items()}
    if isinstance(value, list):
        return [known(item) for item in value]
    return UNKNOWN if isinstance(value, str) and value in _UNKNOWN_SENTINELS else value


def validator(check):
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        for message in check(args.resource_type, known(serialize_properties(args.props))):
            report_violation(message)
    return validate


def stack_validator(check):
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = [StackResource(r.urn, r.resource_type, known(serialize_properties(r.props)), r.opts.protect)
                     for r in args.resources]
        for message in check(resources):
            report_violation(message)
    return validate


def build_policies() -> list:
    return [ResourceValidationPolicy(name=name, description=description, validate=validator(check))
            for name, description, check in POLICIES] + [
        StackValidationPolicy(name=name, description=description, validate=stack_validator(check))
        for name, description, check in STACK_POLICIES]


PolicyPack(
    name="mlflow-platform-security",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=build_policies(),
)
