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
Model files are untrusted input: :func:`fuzz_model_file` loads many damaged copies of a real one (from
:func:`byte_mutations` and the plugin's own format-aware mutations), each in a subprocess, and reports any that
crash the process, hang, raise something other than a one-line gbdt2nn error, or predict non-finite values.
"""

from __future__ import annotations

from gbdt2nn_core.testing._alignment import check_alignment_loss
from gbdt2nn_core.testing._attributor import check_attributor
from gbdt2nn_core.testing._column_path import check_column_path
from gbdt2nn_core.testing._fuzz import FuzzReport, byte_mutations, fuzz_model_file, list_mutation
from gbdt2nn_core.testing._teacher import check_teacher

__all__: list[str] = [
    "FuzzReport",
    "byte_mutations",
    "check_alignment_loss",
    "check_attributor",
    "check_column_path",
    "check_teacher",
    "fuzz_model_file",
    "list_mutation",
]
