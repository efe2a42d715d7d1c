"""scripts/build_plugin.sh: the zip holds the plugin and nothing else, as the plugin repository
wants it (one folder, LICENSE, complete metadata, no caches, under 25 MB), byte for byte the same
from the same tree. Needs no QGIS."""

import codecs
import configparser
import re
import subprocess
import zipfile
from io import StringIO
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "embedding_change"
ALWAYS = {"metadata.txt", "LICENSE", "__init__.py", "provider", "algorithms", "core"}
ALWAYS |= {"resources", "models"}
WHEN_PRESENT = {"dependencies", "layers", "gui"}
CODE_FOLDERS = {"provider", "algorithms", "core"} | WHEN_PRESENT
FORBIDDEN_PARTS = {"tests", "benchmarks", "scripts", "docs", "requirements", ".ci", ".git"}
FORBIDDEN_PARTS |= {"__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "dist", "__MACOSX"}
FORBIDDEN_SUFFIXES = (".pyc", ".pyo", ".nbi", ".nbc")
REPOSITORY_SIZE_LIMIT = 25_000_000  # plugins.qgis.org's PLUGIN_MAX_UPLOAD_SIZE
PLACEHOLDERS = ("example.org", "example.com", "example.net", "github.com/embedding-change")
PLACEHOLDERS += ("http://bugs", "http://repo", "http://homepage")  # the validator's own list


def build(out_dir):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_plugin.sh"), "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def checkout_files():
    """What the build starts from: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def names(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def metadata(plugin_zip):
    """metadata.txt from the zip, parsed the way the plugin repository's validator parses it."""
    parser = configparser.ConfigParser()
    parser.optionxform = str
    with zipfile.ZipFile(plugin_zip) as archive:
        parser.read_file(StringIO(codecs.decode(archive.read(f"{PACKAGE}/metadata.txt"), "utf8")))
    return dict(parser.items("general"))


def test_zip_holds_one_folder_with_exactly_the_allowed_entries(names):
    assert names[0] == f"{PACKAGE}/"
    assert {name.split("/")[0] for name in names} == {PACKAGE}
    present = {name.split("/")[0] for name in checkout_files()} & WHEN_PRESENT
    top_level = {name.split("/")[1] for name in names if name.count("/") >= 1} - {""}
    assert top_level == ALWAYS | present


def test_zip_has_no_tests_caches_or_project_files(names):
    inside = [name.split("/", 1)[1] for name in names]
    for name in inside:
        assert not FORBIDDEN_PARTS & set(name.split("/")), name
        assert not name.endswith(FORBIDDEN_SUFFIXES), name
        assert ".." not in name.split("/") and not name.startswith("/"), name
    for project_file in ("pyproject.toml", ".gitignore", "README.md", "requirements.lock"):
        assert project_file not in inside


def test_every_file_of_the_code_folders_ships(names):
    wanted = {
        name
        for name in checkout_files()
        if name.split("/")[0] in CODE_FOLDERS
        and "__pycache__" not in name.split("/")
        and (name.endswith(".py") or name.startswith("dependencies/locks/"))
    }
    assert wanted, "no code found in the checkout"
    assert wanted <= {name.split("/", 1)[1] for name in names}


def test_zip_is_sound_and_under_the_repository_size_limit(plugin_zip):
    assert plugin_zip.stat().st_size < REPOSITORY_SIZE_LIMIT
    with zipfile.ZipFile(plugin_zip) as archive:
        assert archive.testzip() is None
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", PACKAGE)  # the repository's rule for new plugins


def test_metadata_has_the_fields_qgis_and_the_repository_read(metadata, names):
    for key in ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about"):
        assert metadata.get(key, "").strip(), key
    for key in ("version", "author", "license", "icon", "changelog", "tags", "category"):
        assert metadata.get(key, "").strip(), key
    assert metadata["qgisMinimumVersion"] == "3.22"
    assert metadata["qgisMaximumVersion"] == "3.99"
    assert metadata["hasProcessingProvider"] == "yes"
    assert "/" not in metadata["author"]
    assert f"{PACKAGE}/{metadata['icon']}" in names
    assert metadata["changelog"].startswith(metadata["version"])


def test_zip_is_named_after_the_metadata_version(plugin_zip, metadata):
    assert plugin_zip.name == f"{PACKAGE}-{metadata['version']}.zip"


def test_metadata_has_no_placeholder_values(metadata):
    for key, value in metadata.items():
        for placeholder in PLACEHOLDERS:
            assert placeholder not in value, f"{key} holds the placeholder {placeholder}"


def test_license_file_is_the_gpl_v2_the_metadata_names(plugin_zip, metadata):
    with zipfile.ZipFile(plugin_zip) as archive:
        text = archive.read(f"{PACKAGE}/LICENSE").decode("utf-8")
    header = text.split("GNU GENERAL PUBLIC LICENSE")[0]
    assert metadata["license"] == "GPL-2.0-or-later"
    assert "Embedding Change" in header
    assert "or (at your option) any later version" in " ".join(header.split())
    assert "Version 2, June 1991" in text
    assert "TERMS AND CONDITIONS FOR COPYING, DISTRIBUTION AND MODIFICATION" in text
    assert "NO WARRANTY" in text and "END OF TERMS AND CONDITIONS" in text
    # (Not compared with /usr/share/common-licenses/GPL-2: Debian releases edit that copy.)


def test_building_twice_gives_identical_bytes(plugin_zip, tmp_path):
    again = build(tmp_path)
    assert again.read_bytes() == plugin_zip.read_bytes()


def test_install_script_unpacks_the_zip_and_enables_the_plugin(plugin_zip, names, tmp_path):
    ini = tmp_path / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[General]\nkeep=1\n\n[PythonPlugins]\nother=false\n\n[Last]\nkeep=2\n")
    script = ROOT / "scripts" / "install_plugin_zip.sh"
    for _ in range(2):  # a second install replaces the first and sets the key once
        subprocess.run(["bash", str(script), str(plugin_zip), str(tmp_path)], check=True)

    plugins = tmp_path / "profiles" / "default" / "python" / "plugins"
    installed = {str(p.relative_to(plugins)) for p in plugins.rglob("*")}
    assert installed == {name.rstrip("/") for name in names}
    settings = configparser.ConfigParser(interpolation=None)
    settings.optionxform = str
    settings.read(ini)
    assert dict(settings["PythonPlugins"]) == {"other": "false", PACKAGE: "true"}
    assert settings["General"]["keep"] == "1" and settings["Last"]["keep"] == "2"


@pytest.mark.xfail(
    strict=True,
    reason="plugins.qgis.org also requires email, tracker and repository (reachable URLs): "
    "the project has none yet, so metadata.txt leaves them out and an upload is refused",
)
def test_metadata_has_every_field_the_repository_requires(metadata):
    for key in ("email", "tracker", "repository"):
        assert metadata.get(key, "").strip(), key
