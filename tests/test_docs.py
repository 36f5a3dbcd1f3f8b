"""The hook reference cannot rot: every hook is documented, its example works, and docs/hooks.md is current.

In the manner of datasette's ``tests/test_docs.py``: the docs are generated from the hook specs' docstrings by
``scripts/gen_hook_docs.py``, and these tests fail when someone adds a hook without documenting it, breaks an
example, or edits a docstring without regenerating the page.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

import gbdt2nn_core
from gbdt2nn_core.host import hookspecs
from gbdt2nn_core.host.registry import KINDS, Registry

ROOT = Path(__file__).resolve().parent.parent
HOOKS_MD = ROOT / "docs" / "hooks.md"


def _load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hook_docs", ROOT / "scripts" / "gen_hook_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
HOOKS: list[str] = generator.hook_names()
KIND_OF_HOOK = {hook: kind for kind, (hook, _) in KINDS.items()}


@pytest.fixture(scope="module")
def hooks_md() -> str:
    return HOOKS_MD.read_text(encoding="utf-8")


def _sections(markdown: str) -> dict[str, str]:
    """``### `name``` heading → the text up to the next heading."""
    parts = re.split(r"^#{2,3} `?([^`\n]+?)`?\s*$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _example(hook: str) -> str:
    docstring = getattr(hookspecs, hook).__doc__ or ""
    _, _, after = docstring.partition("Example::\n")
    return textwrap.dedent(after).strip()


def test_hooks_are_found() -> None:
    assert len(HOOKS) >= 4
    assert set(HOOKS) == set(KIND_OF_HOOK), "each hook spec needs an entry in gbdt2nn_core.host.registry.KINDS"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hooks_md: str, hook: str) -> None:
    section = _sections(hooks_md).get(hook)
    assert section is not None, f"docs/hooks.md has no section for {hook}; run python scripts/gen_hook_docs.py"
    assert f"def {hook}(" in section
    assert "Example:" in section


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_says_when_what_and_how(hook: str) -> None:
    docstring = getattr(hookspecs, hook).__doc__ or ""
    assert "Called " in docstring, f"{hook}: say when the hook is called"
    assert "Return " in docstring, f"{hook}: say what the hook returns"
    assert _example(hook), f"{hook}: end the docstring with an 'Example::' block"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_example_is_a_working_plugin(hook: str) -> None:
    """Run the example as a plugin; names it leaves to the reader (``WideStudent``) get stand-in classes."""
    namespace: dict[str, Any] = {name: getattr(gbdt2nn_core, name) for name in gbdt2nn_core.__all__}
    exec(compile(_example(hook), f"<example of {hook}>", "exec"), namespace)
    assert callable(namespace.get(hook)), f"the example of {hook} must define {hook}"
    for _ in range(5):
        try:
            records = namespace[hook]()
            break
        except NameError as exc:
            namespace[str(exc.name)] = type(str(exc.name), (), {})
    else:
        pytest.fail(f"the example of {hook} uses too many names it does not define")
    registry = Registry(strict=True, entry_points=False, plugins=[("example", types.SimpleNamespace(**namespace))])
    kind = KIND_OF_HOOK[hook]
    assert {r.name for r in records} <= set(registry.names(kind))
    assert [c.name for c in registry.components(kind) if c.plugin == "example"] == sorted(r.name for r in records)


def test_alignment_loss_example_computes_a_differentiable_loss() -> None:
    torch = pytest.importorskip("torch")
    namespace: dict[str, Any] = {name: getattr(gbdt2nn_core, name) for name in gbdt2nn_core.__all__}
    exec(compile(_example("gbdt2nn_register_alignment_losses"), "<example>", "exec"), namespace)
    registry = Registry(strict=True, entry_points=False, plugins=[("example", types.SimpleNamespace(**namespace))])
    student = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    loss = registry.alignment_loss("l1")(student, torch.zeros(2, 2))
    assert loss.item() == pytest.approx(0.875)
    loss.backward()
    assert student.grad is not None


@pytest.mark.parametrize(
    "name", [t.__name__ for t in (*generator.SPEC_TYPES, *generator.INTERFACES.values(), *generator.EXCHANGED)]
)
def test_records_and_interfaces_are_documented(hooks_md: str, name: str) -> None:
    assert any(heading.split("(")[0] == name for heading in _sections(hooks_md)), f"no section for {name}"


@pytest.mark.parametrize("interface", list(generator.INTERFACES.values()), ids=lambda i: i.__name__)
def test_every_abstract_member_is_listed(hooks_md: str, interface: type) -> None:
    section = _sections(hooks_md)[interface.__name__]
    for name in getattr(interface, "__abstractmethods__", ()):
        assert f"- `{name}" in section, f"{interface.__name__}.{name} is missing from docs/hooks.md"


def test_hooks_md_is_up_to_date(hooks_md: str) -> None:
    assert hooks_md == generator.render(), "docs/hooks.md is out of date: run python scripts/gen_hook_docs.py"


def test_generator_check_mode_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert generator.main(["--check"]) == 0, capsys.readouterr().err
