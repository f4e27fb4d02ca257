"""Every ``medseg ...`` command the README shows must be one the CLI accepts as written.

Each command is parsed by the real click command behind ``medseg`` (flags, their arity and their values), without
running it; positional inputs that are checkpoints are refused the way ``medseg infer`` refuses them, so a README
example that would treat a model as an image fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from medseg.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """The ``medseg`` lines inside the README's bash blocks, comments removed."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    lines = [line.split(" # ")[0].split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    out = []
    for line in lines:
        for part in line.split("&&"):  # install one-liners end in `&& medseg demo`
            part = part.strip()
            if part.startswith("medseg "):
                out.append(part)
    return out


def parse(command: str):
    """Parse ``command`` down to its leaf sub-command and return that context; raises click's UsageError (typer
    bundles its own click, so it is matched by name) when the CLI would refuse it."""
    args = shlex.split(command)[1:]
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("medseg", list(args))
    while hasattr(cmd, "resolve_command"):  # a group: descend into the named sub-command
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx


def test_readme_has_commands():
    cmds = readme_commands()
    assert len(cmds) >= 15, cmds
    assert any(c.startswith("medseg infer") for c in cmds)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    ctx = parse(command)
    inputs = ctx.params.get("inputs") or []
    checkpoints = [i for i in inputs if str(i).endswith((".pt", ".pth"))]
    assert not checkpoints, f"{command!r}: checkpoints {checkpoints} would be read as inputs; give each its own -m"


def test_parse_refuses_unknown_flag():
    with pytest.raises(Exception) as err:
        parse("medseg infer scan.nii.gz --modle m.pt")
    assert "UsageError" in [c.__name__ for c in type(err.value).__mro__]
