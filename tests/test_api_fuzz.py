"""Fuzz the whole API from its own OpenAPI schema (schemathesis), in process through WSGI.

Every operation the schema documents is called with generated requests, valid and invalid, by a
write key of a tenant that has data (the demo seed), with path ids pointing at its real objects most
of the time. Each answer must: not be a 5xx; have a status code the schema documents; carry the
documented content type; match the documented body (errors included: the one error shape); have
the documented headers.

The schema comes from drf-spectacular's generator, which is what /api/schema/ serves; it is built
when this module is collected, because the operations become the test items (the served view needs
a database, which collection may not touch). Each example runs in a savepoint that is rolled back,
so every example sees the same seeded tenant whatever the examples before it created or deleted; the
seed is fixed and generation derandomized, so a run is reproducible. `make test` runs a few examples
per operation; `make fuzz` many more (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.db import transaction
from drf_spectacular.generators import SchemaGenerator
from schemathesis import Case
from schemathesis.core.failures import Failure

from segmentor.wsgi import application
from tests.fuzz.leniency import accepted_on_purpose
from tests.fuzz.world import FuzzWorld, fuzz_world_module

pytestmark = pytest.mark.django_db  # each operation's test: a savepoint in the module's transaction

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
# The coverage phase (boundary and invalid values of every parameter, deterministic) sends hundreds of
# requests to an operation with a rich body: `make fuzz` only.
FUZZ_COVERAGE = os.environ.get("FUZZ_COVERAGE") == "1"
# Scenarios that chain operations (create, then read, change and delete what was created), following the
# links schemathesis infers from the schema: `make fuzz` only.
FUZZ_STATEFUL = int(os.environ.get("FUZZ_STATEFUL", "0"))

ANSWER_ERRORS_IN_THE_BODY = (
    "/segments/validate/", "/segments/preview/", "/segments/{segment_id}/preview/", "/contacts/bulk/", "/events/batch/",
)  # fmt: skip

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261201,
        "generation": {
            "mode": "all",
            "max-examples": FUZZ_EXAMPLES,
            "deterministic": True,
            "unique-inputs": True,  # no example twice: the few examples of `make test` count
            "database": "none",
            "no-shrink": FUZZ_EXAMPLES <= 20,
            # The key is the test's (a real one, sent with every request); keyless requests are tested in tests/tenants.
            "with-security-parameters": False,
        },
        "phases": {"coverage": {"enabled": FUZZ_COVERAGE}},
        # These answer bad input in their body by design (the validator's errors, per-row results with the
        # valid rows kept) instead of a 400, so accepting schema-violating input is what they are for.
        "operations": [
            {
                "include-path": [f"/api/v1{path}" for path in ANSWER_ERRORS_IN_THE_BODY],
                "checks": {"negative_data_rejection": {"enabled": False}},
            }
        ],
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            # Rules beyond what a schema can say (a rule tree's fields, a campaign's state) refuse schema-valid input.
            "positive_data_acceptance": {"enabled": False},
            # It resends with a made-up key, which the test's real key (sent with every call) overrides; missing,
            # invalid and revoked keys are tested in tests/tenants/test_api.py.
            "ignored_auth": {"enabled": False},
        },
    }
)

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True), config=CONFIG)
schema.app = application


@schema.hook
def filter_failure(context: Any, failure: Failure, case: Case, response: Any) -> bool:
    """Keep every failure but DRF's readings of empty, form and numeric input (tests/fuzz/leniency.py)."""
    return not accepted_on_purpose(failure, case)


REQUESTS: Counter[tuple[str, int]] = Counter()  # (operation, status) -> requests sent


@schema.hook
def after_call(context: Any, case: Case, response: Any) -> None:
    REQUESTS[case.operation.label, response.status_code] += 1


@pytest.fixture(scope="module")
def fuzz_world(request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any) -> Iterator[FuzzWorld]:
    if hasattr(request.config, "workerinput"):  # an xdist worker runs only the first operation's test
        pytest.fail("Run the API fuzz without xdist (`-p no:xdist`), as `make test` does.")
    with fuzz_world_module(django_db_blocker) as world:
        yield world
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and REQUESTS:
        statuses = Counter[int]()
        for (_, status), count in REQUESTS.items():
            statuses[status] += count
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nAPI fuzz: {len({label for label, _ in REQUESTS})} operations, {REQUESTS.total()} requests "
                f"(up to {FUZZ_EXAMPLES} generated examples each); statuses {dict(sorted(statuses.items()))}"
            )


@schema.parametrize()
def test_every_operation_answers_as_its_schema_says(case: Case, fuzz_world: FuzzWorld) -> None:
    fuzz_world.point_at_real_objects(case)
    with transaction.atomic():  # rolled back: the next example sees the seeded tenant again
        case.call_and_validate(headers={"Authorization": f"Bearer {fuzz_world.secret}"})
        transaction.set_rollback(True)


@pytest.mark.skipif(not FUZZ_STATEFUL, reason="make fuzz: FUZZ_STATEFUL=<scenarios>")
def test_chains_of_operations_answer_as_the_schema_says(fuzz_world: FuzzWorld) -> None:
    calls: list[tuple[str, int]] = []

    class Scenario(schema.as_state_machine()):  # type: ignore[misc]
        """Each scenario in a savepoint rolled back at its end, like the examples above."""

        def setup(self) -> None:
            self.atomic = transaction.atomic()
            self.atomic.__enter__()

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self.atomic.__exit__(None, None, None)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {fuzz_world.secret}"}}

        def after_call(self, response: Any, case: Case) -> None:
            calls.append((case.operation.label, response.status_code))

    Scenario.run(
        settings=hypothesis.settings(
            max_examples=FUZZ_STATEFUL, stateful_step_count=8, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )  # fmt: skip
    chained = {label for label, status in calls if status < 400}
    print(f"stateful: {FUZZ_STATEFUL} scenarios, {len(calls)} calls, {len(chained)} operations answered 2xx")
    assert len(chained) > 1
