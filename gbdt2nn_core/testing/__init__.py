"""Conformance kit for plugin authors: one call per kind of component checks its contract.

Use it in your plugin's own tests::

    from gbdt2nn_core.testing import check_alignment_loss
    from my_plugin.plugin import gbdt2nn_register_alignment_losses

    def test_conforms():
        for spec in gbdt2nn_register_alignment_losses():
            check_alignment_loss(spec)

Each check raises ``AssertionError`` with a message that names the broken promise.

For teacher plugins, two pytest helpers (they import pytest, so they are separate modules):
:mod:`gbdt2nn_core.testing.fixtures` (small slices of the bundled datasets, one per task, for a ``conftest.py``)
and :class:`gbdt2nn_core.testing.suite.TeacherPluginTests` (a test class that runs the whole teacher contract).
"""

from __future__ import annotations

from gbdt2nn_core.testing._alignment import check_alignment_loss
from gbdt2nn_core.testing._attributor import check_attributor
from gbdt2nn_core.testing._teacher import check_teacher

__all__: list[str] = ["check_alignment_loss", "check_attributor", "check_teacher"]
