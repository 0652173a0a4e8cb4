"""Schemathesis against /openapi.json over real HTTP: no 5xx, and every response matches the schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES_PER_OPERATION = 50


def test_every_operation_holds_its_contract(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None]
) -> None:
    served("tiny.en")
    api = api_factory()
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def holds(case: Any) -> None:
            case.call_and_validate(base_url=str(api.base_url), checks=[not_a_server_error, response_schema_conformance])

        holds()
