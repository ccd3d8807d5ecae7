"""procfs.users_of and supervisor.run_tool: what a systemd stop runs before it stops the device."""
from trueno_ublk.base import procfs

SWAPS = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/ublkb1                             partition\t262140\t\t1024\t\t100
/dev/ublkb10                            partition\t262140\t\t0\t\t100
"""
MOUNTS = """/dev/ublkb2 /srv/a ext4 rw,relatime 0 0
/dev/ublkb20 /srv/b ext4 rw,relatime 0 0
/dev/ublkb2 /srv/a/inner ext4 rw,relatime 0 0
/dev/ublkb4 /var/tmp/scratch\\040space ext4 rw,relatime 0 0
"""


def users(tmp_path, node):
    (tmp_path / "swaps").write_text(SWAPS)
    (tmp_path / "mounts").write_text(MOUNTS)
    return procfs.users_of(node, str(tmp_path / "swaps"), str(tmp_path / "mounts"))


def test_swap_is_swapped_off_and_a_longer_name_is_another_device(tmp_path):
    assert users(tmp_path, "/dev/ublkb1") == [["swapoff", "/dev/ublkb1"]]


def test_every_mount_is_unmounted_the_last_first(tmp_path):
    assert users(tmp_path, "/dev/ublkb2") == [["umount", "/srv/a/inner"], ["umount", "/srv/a"]]


def test_a_mount_point_with_a_space(tmp_path):
    assert users(tmp_path, "/dev/ublkb4") == [["umount", "/var/tmp/scratch space"]]


def test_an_unused_device_needs_nothing(tmp_path):
    assert users(tmp_path, "/dev/ublkb3") == []
    assert users(tmp_path, "Filename") == []      # the header is no device


def test_run_tool_says_why_in_one_line():
    from trueno_ublk.daemon.supervisor import run_tool
    assert run_tool(["true"], 10) is None
    assert run_tool(["sh", "-c", "echo first >&2; echo 'swapoff: last' >&2; exit 1"], 10) == "swapoff: last"
    assert run_tool(["false"], 10) == "no reason given"
    assert "no-such-tool" in run_tool(["no-such-tool"], 10)
    assert "timed out" in run_tool(["sleep", "5"], 0.2)
