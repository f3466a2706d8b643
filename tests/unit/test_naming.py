import uuid

import pytest

from shared.contracts.errors import DropRefusedError
from shared.naming import guard_tenant_name, tenant_name


def test_tenant_names_derive_from_the_resource_id_and_pass_the_guard() -> None:
    resource_id = uuid.uuid4()
    name = tenant_name(resource_id)
    assert name == "t_" + resource_id.hex
    assert guard_tenant_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["postgres", "template1", "t_", "t_abc", "T_" + "a" * 32, "t_" + "a" * 32 + "; DROP", "spinup"],
)
def test_guard_refuses_anything_not_made_by_tenant_name(name: str) -> None:
    with pytest.raises(DropRefusedError):
        guard_tenant_name(name)
