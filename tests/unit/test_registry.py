import pytest

from tether.core.errors import UserError
from tether.core.registry import Registry


def test_register_get_and_unknown_name_lists_known():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    reg.register("b")(2)
    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"]
    with pytest.raises(UserError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(3)
