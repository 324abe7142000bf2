"""The installed shape: one import name, the layer contract, no import circle but one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("common", "producer", "workers")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """A wheel built from the tree holds one top-level package, sessionstreams, with the Lua
    scripts and the py.typed markers."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("sessionstreams-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"sessionstreams"}
    assert "sessionstreams/common/lua/hashidx_append.lua" in names
    assert {f"sessionstreams/{p}/py.typed" for p in PARTS} <= set(names)
    assert not any(n.startswith(f"{p}/") for p in PARTS for n in names)
    # Every module of the tree is in the wheel (a subpackage missing from the package list
    # would install a library that cannot import).
    tree = {f"sessionstreams/{path.relative_to(ROOT).as_posix()}"
            for part in PARTS for path in (ROOT / part).rglob("*.py")}
    assert tree <= set(names), sorted(tree - set(names))


def test_an_app_with_its_own_common_producer_workers_uses_sessionstreams(
    tmp_path: Path, redis_server: object, make_settings: object
) -> None:
    """An application whose own packages are called common, producer and workers runs the
    quick start: its packages and ours do not shadow each other."""
    url = make_settings().url  # type: ignore[operator]
    for part in PARTS:
        (tmp_path / part).mkdir()
        (tmp_path / part / "__init__.py").write_text(f"OWNER = 'app-{part}'\n")
    (tmp_path / "app.py").write_text(textwrap.dedent(f"""
        import asyncio
        import common, producer, workers
        from sessionstreams.producer import Event, Key, SessionService, Settings

        async def main() -> None:
            settings = Settings(url={url!r}, key_prefix="appshadow")
            async with SessionService(settings) as svc:
                s = await svc.create_session(Key("app", "user", ""))
                await svc.append_event(s, Event.message("user", "hello"))
                s = await svc.get_session(s.key)
                print(common.OWNER, producer.OWNER, workers.OWNER, len(s.events))

        asyncio.run(main())
    """))
    done = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["app-common", "app-producer", "app-workers", "1"]


def test_import_graph_has_one_circle_models_and_codec() -> None:
    """The only import circle is models <-> _codec (the public Structs carry from_json/to_json,
    which the codec implements on those very Structs)."""
    graph = grimp.build_graph(*(f"sessionstreams.{p}" for p in PARTS),
                              exclude_type_checking_imports=True)
    circles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert circles == [["sessionstreams.common._codec", "sessionstreams.common.models"]]


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components of the direct-import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_import_contract_holds() -> None:
    """lint-imports keeps both contracts on the tree as it is."""
    done = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout
    assert "2 kept, 0 broken" in done.stdout


def test_import_contract_catches_common_importing_producer(tmp_path: Path) -> None:
    """A copy of the tree where common imports the producer breaks the contract."""
    package = tmp_path / "sessionstreams"
    for part in PARTS:
        shutil.copytree(ROOT / part, package / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (package / "common" / "keys.py").open("a") as f:
        f.write("\nimport sessionstreams.producer  # noqa: E402\n")
    done = subprocess.run([str(LINT_IMPORTS)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False, env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert "common imports neither the producer nor the workers BROKEN" in done.stdout
    assert "sessionstreams.common.keys -> sessionstreams.producer" in done.stdout


def test_producer_exports_the_public_api() -> None:
    """sessionstreams.producer re-exports the service, settings, models and every error."""
    import sessionstreams.producer as public
    from sessionstreams.common import errors

    names = {"SessionService", "Settings", "CompatMode", "Key", "UserKey", "Session", "Event",
             "TrackEvent", "Summary", "Receipt"}
    names |= {n for n, v in vars(errors).items()
              if isinstance(v, type) and issubclass(v, errors.SessionStoreError)}
    assert names <= set(public.__all__)
    assert all(getattr(public, n) is not None for n in public.__all__)
