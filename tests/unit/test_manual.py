"""The manual pages against the code they describe: every command and every
option of the installed `trueno-ublk` command is defined in its command's
section of trueno-ublk(8), every config key in trueno-ublk.conf(5), neither
page defines one the code lacks, and both pages build without a warning."""
import importlib
import importlib.metadata
import inspect
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from cli_tree import subcommands, walk

MAN = Path(__file__).resolve().parents[2] / "man"
COMMAND_PAGE = MAN / "trueno-ublk.8.scd"
CONFIG_PAGE = MAN / "trueno-ublk.conf.5.scd"

def root_command() -> click.Command:
    """The click group behind the installed command. The console script names
    a function that runs it (or the group itself); the group is then the one
    in that function's module that no other group there contains."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="trueno-ublk")
    target = entry.load()
    if isinstance(target, click.Command):
        return target
    module = importlib.import_module(target.__module__)
    groups = [value for value in vars(module).values() if isinstance(value, click.Group)]
    contained = {id(sub) for group in groups for sub in subcommands(group).values()}
    (root,) = [group for group in groups if id(group) not in contained]
    return root


def config_keys() -> set[str]:
    """Every key the config file takes, read from the config module's parser
    (one `key == "..."` branch each). The one line that names the module."""
    from trueno_ublk.systemd import config
    return set(re.findall(r'key == "([a-z][a-z-]*)"', inspect.getsource(config)))


def sections(page: Path) -> dict[str, str]:
    """Heading ("OPTIONS", "create", "config check", ...) -> its text up to
    the next heading; literal blocks cannot start one."""
    found, heading, literal = {}, None, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            literal = not literal
        if line.startswith("#") and not literal:
            heading = line.lstrip("#").strip()
            found[heading] = ""
        elif heading is not None:
            found[heading] += line + "\n"
    return found


def section_of(path: tuple) -> str:
    return " ".join(path) or "OPTIONS"


def defined_terms(text: str) -> set[str]:
    """What a section defines: the *bold* words of its term lines (scdoc's
    definition lists: a term line, then its description indented by a tab)."""
    return {term for line in text.splitlines() if line.startswith("*")
            for term in re.findall(r"\*([^*\s]+)\*", line)}


def documented_options(command: click.Command, path: tuple) -> dict[str, list[str]]:
    """Every spelling of each option of `command`, with its choices, as
    {"--opt": [choices]}; the help option only at the top, where the page says
    every command takes it."""
    options = {}
    for param in command.params:
        if isinstance(param, click.Option):
            choices = list(param.type.choices) if isinstance(param.type, click.Choice) else []
            for opt in [*param.opts, *param.secondary_opts]:
                options[opt] = choices
    if not path:
        context = click.Context(command, info_name="trueno-ublk", **command.context_settings)
        options.update({opt: [] for opt in command.get_help_option(context).opts})
    return options


def test_every_command_has_its_section():
    page = sections(COMMAND_PAGE)
    missing = [section_of(path) for path, _ in walk(root_command()) if section_of(path) not in page]
    assert not missing, f"{COMMAND_PAGE.name} has no section for: {', '.join(missing)}"


def test_every_section_under_commands_is_a_command():
    text = COMMAND_PAGE.read_text()
    described = re.findall(r"^## (.+)$", text.split("\n# COMMANDS\n")[1].split("\n# ")[0], re.M)
    commands = {section_of(path) for path, _ in walk(root_command())}
    assert set(described) - commands == set(), "sections for commands the CLI does not have"


def test_every_option_is_defined_in_its_commands_section():
    page = sections(COMMAND_PAGE)
    missing = []
    for path, command in walk(root_command()):
        text = page.get(section_of(path), "")
        terms = defined_terms(text)
        for opt, choices in documented_options(command, path).items():
            if opt not in terms:
                missing.append(f"{section_of(path)}: {opt}")
            missing += [f"{section_of(path)}: {opt} {choice}" for choice in choices if f"*{choice}*" not in text]
    assert not missing, f"{COMMAND_PAGE.name} does not define: {'; '.join(missing)}"


def test_no_section_defines_an_option_its_command_lacks():
    page = sections(COMMAND_PAGE)
    extra = []
    for path, command in walk(root_command()):
        options = set(documented_options(command, path))
        terms = {t for t in defined_terms(page.get(section_of(path), "")) if t.startswith("-")}
        extra += [f"{section_of(path)}: {opt}" for opt in sorted(terms - options)]
    assert not extra, f"{COMMAND_PAGE.name} defines options the CLI lacks: {'; '.join(extra)}"


def test_config_keys_match_the_conf_page():
    keys = config_keys()
    assert len(keys) > 10, "config_keys() found too few keys: the config module changed, fix the lookup"
    defined = set(re.findall(r"^\*([a-z][a-z-]*)\* = ", sections(CONFIG_PAGE)["KEYS"], re.M))
    assert keys - defined == set(), f"{CONFIG_PAGE.name} does not define these keys"
    assert defined - keys == set(), f"{CONFIG_PAGE.name} defines keys the config does not take"


@pytest.mark.parametrize("page", [COMMAND_PAGE, CONFIG_PAGE], ids=lambda p: p.name)
def test_page_builds_without_warnings(page):
    if shutil.which("scdoc") is None:
        pytest.skip("scdoc is not installed (scripts/setup installs it): the pages' build is not checked")
    with page.open("rb") as source:
        built = subprocess.run(["scdoc"], stdin=source, capture_output=True)
    assert built.returncode == 0 and not built.stderr, built.stderr.decode()
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (man-db brings it): the built page is not checked for warnings")
    rendered = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8"], input=built.stdout, capture_output=True)
    assert rendered.returncode == 0 and not rendered.stderr, rendered.stderr.decode()
