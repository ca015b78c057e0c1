"""A ratchet on size: no non-test function newly grows past a screen (70 lines).

The functions that were longer when the rule came in are listed with their length then; each may
shrink (lower its number here when it does) but never grow, and no other function may join them.
Modelled on TigerBeetle's tidy check: a long function is where bugs hide from review.
"""

from __future__ import annotations

import ast
from pathlib import Path

FUNCTION_LINES_MAX = 70
ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("ledger", "projections", "adapters", "workers", "stripe_sandbox", "scripts")

# Known long functions ("path:Qualified.name" → lines allowed), shrinking only.
LONG_FUNCTIONS_ALLOWED = {
    "stripe_sandbox/payments.py:PaymentsMixin.create_refund": 87,
    "stripe_sandbox/payments.py:PaymentsMixin._capture": 87,
    "stripe_sandbox/payments.py:PaymentsMixin.create_payment_intent": 82,
    "adapters/persistence.py:_guarded_class": 82,
    "stripe_sandbox/transfers.py:TransfersMixin.make_transfer": 80,
}


def function_lengths(root: Path = ROOT, packages: tuple[str, ...] = CHECKED) -> dict[str, int]:
    """Every function and method in the checked packages, by "path:qualname", in lines."""
    lengths: dict[str, int] = {}

    def walk(node: ast.AST, path: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                lengths[f"{path}:{name}"] = int(child.end_lineno or child.lineno) - child.lineno + 1
                walk(child, path, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, path, f"{prefix}{child.name}.")

    for package in packages:
        for source in sorted((root / package).rglob("*.py")):
            path = source.relative_to(root).as_posix()
            walk(ast.parse(source.read_text(encoding="utf-8")), path, "")
    return lengths


def test_no_function_grows_past_a_screen_unless_it_already_was_and_then_never_longer() -> None:
    too_long = {
        name: lines
        for name, lines in function_lengths().items()
        if lines > LONG_FUNCTIONS_ALLOWED.get(name, FUNCTION_LINES_MAX)
    }
    assert not too_long, (
        f"functions longer than {FUNCTION_LINES_MAX} lines (or than their listed length): "
        f"{too_long}; split them by job"
    )


def test_the_list_of_long_functions_names_only_functions_that_exist_and_are_still_long() -> None:
    lengths = function_lengths()
    stale = {
        name: lengths.get(name)
        for name in LONG_FUNCTIONS_ALLOWED
        if lengths.get(name, 0) <= FUNCTION_LINES_MAX
    }
    assert not stale, f"shrunk or gone, take them off LONG_FUNCTIONS_ALLOWED: {stale}"


def test_the_ratchet_measures_methods_and_nested_functions_to_the_line(tmp_path: Path) -> None:
    """The measure itself can fail: a 71-line method is found under its qualified name."""
    body = "\n".join(f"        x{n} = {n}" for n in range(70))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"class C:\n    def long(self):\n{body}\n")
    assert function_lengths(tmp_path, ("pkg",)) == {"pkg/m.py:C.long": 71}
