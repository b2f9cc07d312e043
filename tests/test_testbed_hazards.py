"""Which directories the box's boot would change, from tmpfiles.d rules (pure: no box, no host)."""

import pytest

from concurrentd.testbed._hazards import (
    CONTAINS,
    INSIDE,
    SAME,
    expand_specifiers,
    first_conflict,
    parse_cat_config,
    relation,
)

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

# As `systemd-tmpfiles --cat-config` prints it: each file named on a comment line of its own.
CAT_CONFIG = """\
# /usr/lib/tmpfiles.d/tmp.conf
#  comment: /not/a/header because it has spaces
D /tmp 1777 root root -
q /var/tmp 1777 root root 30d

# /usr/lib/tmpfiles.d/home.conf
Q /home 0755 - - -
d- /root :0700 root :root -
d- /root/.ssh :0700 root :root -

# /usr/lib/tmpfiles.d/systemd-tmp.conf
x /tmp/systemd-private-%b-*
R! /srv/systemd-private-*
d /var/cache/man 0755 man man 1w
Z /run/log/journal/%m ~2750 root systemd-journal - -
f+! "/run/with space" 0644 - - - "System is booting up. Don't"
"""
RULES = parse_cat_config(CAT_CONFIG)


def test_every_rule_but_exclusions_is_read_with_its_file():
    assert len(RULES) == 9   # x changes nothing
    assert RULES[0].origin == ("the tmpfiles rule `D /tmp 1777 root root -` "
                               "(/usr/lib/tmpfiles.d/tmp.conf)")
    assert RULES[2].origin.endswith("(/usr/lib/tmpfiles.d/home.conf)")
    assert RULES[-1].pattern == ("run", "with space")


def test_which_rules_reach_below_their_path():
    reach = {"/" + "/".join(r.pattern): r.reaches_below for r in RULES}
    assert reach["/tmp"] and reach["/srv/systemd-private-*"]   # D empties, R removes
    assert reach["/var/tmp"] and reach["/var/cache/man"]        # an age: cleaned
    assert reach["/run/log/journal/*"]                          # Z: recursive
    assert not reach["/home"] and not reach["/root"] and not reach["/root/.ssh"]


def test_specifiers_become_directories_or_patterns():
    assert expand_specifiers("%T/x-%b-%m/%h/%%") == "/tmp/x-*-*//root/%"


@pytest.mark.parametrize("path, how", [
    ("/tmp", SAME), ("/tmp/pytest-of-root/t0", CONTAINS), ("/var/tmp/x", CONTAINS),
    ("/", INSIDE), ("/var", INSIDE), ("/root", SAME), ("/srv", INSIDE),
    ("/srv/systemd-private-abc", SAME), ("/srv/systemd-private-abc/tmp", CONTAINS),
    ("/run/log/journal/0123/x", CONTAINS), ("/var/cache/man/cat1", CONTAINS), ("/run", INSIDE),
    ("/home", SAME),
])
def test_a_directory_the_boot_changes_is_named_with_the_rule(path, how):
    found = [relation(path, r) for r in RULES if relation(path, r)]
    assert how in found
    assert first_conflict(path, RULES) is not None


@pytest.mark.parametrize("path", ["/home/alice", "/home/alice/src", "/root/src", "/srv/data",
                                  "/opt", "/var/lib/apt", "/tmpx", "/run/logs"])
def test_a_directory_no_rule_reaches_is_allowed(path):
    # Q /home and d- /root change only those directories themselves; /tmpx is not /tmp
    assert first_conflict(path, RULES) is None


def test_the_most_telling_rule_is_named():
    # /tmp is named by `D /tmp` itself; that is what empties it
    assert first_conflict("/tmp", RULES).startswith("the tmpfiles rule `D /tmp 1777 root root -`")
    assert "it lies inside /tmp, whose contents the tmpfiles rule `D /tmp" in \
        first_conflict("/tmp/a", RULES)
    assert "/root/.ssh, inside it" not in first_conflict("/root", RULES)   # SAME comes first


def test_a_file_in_run_also_reads_the_file_it_hides_from_cat_config(tmp_path, monkeypatch):
    # the box's /run is empty: there the file that /run/tmpfiles.d/foo.conf shadows applies
    from concurrentd.testbed import _hazards

    lower, lowest = tmp_path / "local", tmp_path / "lib"
    lower.mkdir(), lowest.mkdir()
    (lowest / "foo.conf").write_text("D /srv/cleaned\n")
    monkeypatch.setattr(_hazards, "_AFTER_RUN", (str(lower), str(lowest)))
    text = "# /run/tmpfiles.d/foo.conf\nd /srv/x\n\n# /usr/lib/tmpfiles.d/bar.conf\nd /y\n"
    assert _hazards.shadowed_by_run(text) == [str(lowest / "foo.conf")]


# -- where a box shows each directory -------------------------------------------------------------

def _placed(path, rules=RULES, why="asked to bind"):
    from concurrentd.testbed.box import place

    return place({path: why}, rules)[path]


@pytest.mark.parametrize("path", ["/home/alice", "/srv/data", "/opt/src"])
def test_a_directory_no_rule_reaches_is_shown_at_its_own_path(path):
    assert _placed(path) == path


@pytest.mark.parametrize("path", ["/tmp/x/concurrentd", "/tmp/pytest-of-root/t0",
                                  "/var/tmp/clone"])
def test_a_directory_in_tmp_or_var_tmp_the_boot_cleans_is_shown_elsewhere(path):
    # `D /tmp` would empty it, `q /var/tmp ... 30d` clean it: the box shows it at a path no rule
    # reaches (and links its own path there once booted)
    from concurrentd.testbed.box import ELSEWHERE

    assert _placed(path) == ELSEWHERE + path
    assert first_conflict(ELSEWHERE + path, RULES) is None


@pytest.mark.parametrize("path", ["/tmp", "/var/tmp", "/root", "/srv", "/var"])
def test_a_directory_the_boot_changes_elsewhere_is_still_refused(path):
    # /tmp itself cannot be linked from its own path: the box's /tmp is its own
    from concurrentd.testbed import TestbedError

    with pytest.raises(TestbedError, match=rf"^refusing to show {path} \(asked to bind\)"):
        _placed(path)


def test_a_directory_is_refused_if_even_elsewhere_a_rule_reaches_it():
    from concurrentd.testbed import TestbedError
    from concurrentd.testbed.box import ELSEWHERE

    rules = RULES + parse_cat_config(f"D {ELSEWHERE} 0755 root root -\n")
    with pytest.raises(TestbedError, match="refusing to show /tmp/x "):
        _placed("/tmp/x", rules)
