"""The Dockerfile: hadolint-clean, and built the way the manifests expect to run it.

No container engine runs here, so the image itself is not built: these tests lint the file with
the real hadolint and check, instruction by instruction, what the pods rely on (non-root numeric
user, nothing written outside /tmp, the entry point, no compiler in the final stage).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, Tools

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each with its (KEYWORD, arguments) instructions."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], parts[0]
            )
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.args_of("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def run_hadolint(tools: Tools, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes(tools: Tools) -> None:
    done = run_hadolint(tools, DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_config_fails_a_careless_dockerfile(tools: Tools, tmp_path: Path) -> None:
    # The same configuration must flag the usual faults: it does lint, it is not a no-op.
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install requests\n"
        "CMD python -m http.server\n"
    )
    done = run_hadolint(tools, careless)
    assert done.returncode != 0
    found = set(re.findall(r"DL\d{4}", done.stdout))
    # untagged image, unpinned apt / pip, no --no-install-recommends, shell-form CMD
    assert {"DL3006", "DL3008", "DL3013", "DL3015", "DL3025"} <= found, done.stdout


def test_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert final.base == "python:3.11-slim"
    assert builder.base == final.base  # the copied virtualenv's interpreter path must exist
    # The final stage takes only the virtualenv from the builder, and builds nothing itself.
    assert final.args_of("COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert final.args_of("RUN") == []


def test_no_compiler_or_pip_cache(stages: list[Stage]) -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|apt-get|apk)\b", text)
    builder = stages[0]
    assert env_of(builder).get("PIP_NO_CACHE_DIR") == "1"
    install = " ".join(builder.args_of("RUN"))
    assert "--only-binary=:all:" in install  # fail rather than compile a dependency


# What the virtualenv brings for installing and nothing at run time imports; scanners flag it.
PACKAGING_TOOLS = (
    "pip",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "distutils-precedence.pth",
    "wheel",
)


def cleanup_steps(stages: list[Stage]) -> list[str]:
    """The builder's steps from the uninstall on, with /opt/venv as written."""
    run = next(args for args in stages[0].args_of("RUN") if "pip uninstall" in args)
    steps = run.split(" && ")
    first = next(i for i, step in enumerate(steps) if "pip uninstall" in step)
    return steps[first:]


def run_steps(steps: list[str], venv: Path) -> subprocess.CompletedProcess[str]:
    script = " && ".join(step.replace("/opt/venv", str(venv)) for step in steps)
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def fresh_venv(path: Path) -> Path:
    """A virtualenv made the way the builder makes /opt/venv (with pip and setuptools)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_the_venv_keeps_no_packaging_tools(stages: list[Stage], tmp_path: Path) -> None:
    steps = cleanup_steps(stages)
    assert steps[-1].startswith("test -z")  # the build fails if anything is left
    venv = fresh_venv(tmp_path / "venv")
    before = {p.name for p in site_packages(venv).iterdir()}
    assert {"pip", "setuptools", "_distutils_hack", "distutils-precedence.pth"} <= before
    done = run_steps(steps, venv)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(
        p.name
        for p in [*site_packages(venv).iterdir(), *(venv / "bin").iterdir()]
        if p.name.lower().startswith(PACKAGING_TOOLS)
    )
    assert left == []
    gone = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import setuptools"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "No module named 'setuptools'" in gone.stderr


@pytest.mark.parametrize("planted", ["wheel", "wheel-0.44.0.dist-info", "setuptools", "pip"])
def test_the_build_fails_when_a_packaging_tool_is_left(
    stages: list[Stage], tmp_path: Path, planted: str
) -> None:
    # e.g. a dependency that pulls wheel in at install time: the guard stops the build
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages" / planted).mkdir(parents=True)
    (venv / "bin").mkdir()
    done = run_steps(cleanup_steps(stages)[-1:], venv)
    assert done.returncode != 0


def test_runs_as_numeric_non_root_with_read_only_root(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.args_of("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "runAsNonRoot can only verify a numeric uid"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    env = env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # Libraries that keep caches under HOME or TMPDIR write to the /tmp emptyDir.
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_entrypoint_and_command(stages: list[Stage]) -> None:
    final = stages[-1]
    assert final.args_of("ENTRYPOINT") == ['["warehouse-operator"]']
    assert final.args_of("CMD") == ['["run"]']
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "warehouse-operator" in project["scripts"]
    exposed = {int(p) for args in final.args_of("EXPOSE") for p in args.split()}
    assert {8080, 8081} <= exposed  # WHC_METRICS_PORT and WHC_HEALTH_PORT defaults


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parents = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = _ignore_regex(pattern.strip().strip("/"))
        if any(regex.fullmatch(p) for p in parents):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_build_copies(stages: list[Stage]) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    local = [".venv/bin/python", ".cache/venvs/x/bin/python", ".git/HEAD", ".env"]
    sent = {p for p in tracked + local if not dockerignore_excludes(patterns, p)}

    copied = [
        src
        for args in stages[0].args_of("COPY")
        for src in args.split()[:-1]
        if not src.startswith("--")
    ]
    assert set(copied) == {"pyproject.toml", "README.md", "operator"}
    for src in copied:
        if (ROOT / src).is_file():
            assert src in sent, f"{src} is copied by the Dockerfile but left out of the context"
    package_files = [p for p in tracked if p.startswith("operator/")]
    assert package_files
    assert all(p in sent for p in package_files)
    assert sent <= {"pyproject.toml", "README.md", *package_files}
    assert not dockerignore_excludes(patterns, "operator/warehouse_operator/data/crd.yaml")
    assert dockerignore_excludes(patterns, "operator/warehouse_operator/__pycache__/x.pyc")
