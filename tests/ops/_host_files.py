"""Render every file terraform puts on a host, offline, with the real terraform binary.

``terraform/hosts.tf`` holds the one ``module "host_files"`` block the deployment uses. We copy
that block into a throwaway root module next to a copy of ``terraform/variables.tf`` (so the
variables' own validations run), replace the attributes only AWS knows after an apply with the
stand-ins below, and ``terraform apply`` it: the module declares no provider and no resource,
so nothing is downloaded and no cloud is touched. The result is exactly what ``compute.tf`` puts
into each instance's user data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import yaml

from ._tools import REPO, require_tool, run

TF = REPO / "terraform"
EXAMPLE_TFVARS = REPO / "examples" / "prod.tfvars.example"

# What AWS assigns at apply time, as the throwaway root writes it instead (HCL expressions).
# Everything else reaching the module is a variable of variables.tf or a literal local.
STAND_INS = {
    "aws_db_instance.production.address": '"kalshi-prod.c0ffee123456.us-east-1.rds.amazonaws.com"',
    "aws_db_instance.production.port": "5432",
    "aws_s3_bucket.archive.bucket": '"kalshi-prod-archive-123456789012"',
}

# Offline and quiet: no update check, no prompts, plugins never fetched.
TF_ENV = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}


class RenderError(AssertionError):
    """terraform refused the inputs; ``str()`` is its error text."""


@dataclass(frozen=True)
class Rendered:
    """Files per host (absolute path on the host -> content) and the user data that carries them."""

    gatherer_files: list[dict[str, str]]
    deduplicator_files: dict[str, str]
    gatherer_user_data: list[str]
    deduplicator_user_data: str
    secret_names: dict[str, str]

    def hosts(self) -> dict[str, dict[str, str]]:
        out = {f"gatherer-{i + 1}": files for i, files in enumerate(self.gatherer_files)}
        out["deduplicator"] = self.deduplicator_files
        return out


def _hosts_block() -> str:
    text = (TF / "hosts.tf").read_text()
    start = text.index('module "host_files"')
    return text[start:]


def _literal_locals(names: set[str]) -> dict[str, Any]:
    """The root locals ``hosts.tf`` uses; each must be a literal (no resource or data source)."""
    with (TF / "main.tf").open() as fh:
        doc = hcl2.load(fh)
    found: dict[str, Any] = {}
    for block in doc.get("locals", []):
        found.update(block)
    out: dict[str, Any] = {}
    for name in sorted(names):
        assert name in found, f"hosts.tf uses local.{name}, which main.tf does not define"
        value = found[name]
        if isinstance(value, str):
            value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
            assert "${" not in value, f"local.{name} = {value} is not a literal"
        out[name] = value
    return out


def write_root(workdir: Path, overrides: dict[str, str] | None = None) -> Path:
    """The throwaway root module; ``overrides`` replace module arguments (HCL expressions)."""
    root = workdir / "root"
    root.mkdir(parents=True)
    shutil.copy(TF / "variables.tf", root / "variables.tf")
    block = _hosts_block()
    module_dir = os.path.relpath(TF / "host-files", root)
    block = block.replace('source = "./host-files"', f'source = "{module_dir}"')
    for ref, expr in STAND_INS.items():
        block = block.replace(ref, expr)
    leftover = re.findall(r"\b(?:aws_\w+|data|random_\w+|module)\.[\w.\[\]*]+", block)
    assert not leftover, f"hosts.tf passes cloud attributes without a stand-in: {leftover}"
    for arg, expr in (overrides or {}).items():
        block, n = re.subn(rf"(?m)^(\s*{arg}\s*=\s*).*$", lambda m, e=expr: m.group(1) + e, block)
        assert n == 1, f"no module argument {arg}"
    locals_used = set(re.findall(r"\blocal\.(\w+)", block))
    (root / "stand_ins.tf.json").write_text(json.dumps({"locals": _literal_locals(locals_used)}))
    (root / "main.tf").write_text(block + '\noutput "host_files" {\n  value = module.host_files\n}\n')
    return root


def terraform(root: Path, *args: str, timeout: float = 120) -> str:
    tool = require_tool("terraform")
    env = {**os.environ, **TF_ENV, "TF_DATA_DIR": str(root / ".terraform")}
    # No CLI config: a machine's plugin mirrors or credentials play no part here.
    env.pop("TF_CLI_CONFIG_FILE", None)
    import subprocess

    proc = subprocess.run([tool, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RenderError(_strip_ansi(proc.stderr or proc.stdout))
    return proc.stdout


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def render(workdir: Path, tfvars: Path = EXAMPLE_TFVARS, overrides: dict[str, str] | None = None,
           extra_vars: dict[str, str] | None = None) -> Rendered:
    """``terraform init`` + ``apply`` of the throwaway root; raises ``RenderError`` on refusal."""
    root = write_root(workdir, overrides)
    terraform(root, "init", "-input=false", "-no-color")
    var_args = [f"-var={k}={v}" for k, v in (extra_vars or {}).items()]
    terraform(root, "apply", "-auto-approve", "-input=false", "-no-color",
              f"-var-file={tfvars.resolve()}", *var_args)
    out = json.loads(terraform(root, "output", "-json", "-no-color", "host_files"))
    return Rendered(
        gatherer_files=out["gatherer_files"],
        deduplicator_files=out["deduplicator_files"],
        gatherer_user_data=out["gatherer_user_data"],
        deduplicator_user_data=out["deduplicator_user_data"],
        secret_names=out["secret_names"],
    )


def user_data_files(user_data: str) -> dict[str, tuple[str, str]]:
    """{path: (permissions, content)} of a rendered #cloud-config (what cloud-init writes)."""
    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    return {f["path"]: (f["permissions"], f["content"]) for f in doc["write_files"]}


__all__ = ["EXAMPLE_TFVARS", "STAND_INS", "RenderError", "Rendered", "render", "run",
           "user_data_files", "write_root"]
