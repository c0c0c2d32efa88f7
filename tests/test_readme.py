"""The README's generated tables match the code they document."""
import os
import re

from ssed import config, control

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def section(name):
    text = open(README, encoding="utf-8").read()
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert m, f"README has no {name} section"
    return m.group(1)


def test_readme_starts_with_make_run_and_make_test():
    text = open(README, encoding="utf-8").read()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "run"],
                                                                        ["make", "test"]]


def test_readme_keys_table_is_the_generated_one():
    assert section("keys") == config.keys_markdown().strip()


def test_readme_lists_every_control_command():
    rows = section("commands").splitlines()[2:]
    documented = [re.match(r"\| `(\w+)", row).group(1) for row in rows]
    assert sorted(documented) == sorted(control.COMMANDS)
