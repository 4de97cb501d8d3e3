import subprocess
import sys

from instaseg import __version__


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "instaseg.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "instaseg.cli", "--help"], capture_output=True, text=True)
    for command in ("data", "models", "train", "eval", "predict", "demo"):
        assert command in proc.stdout


def test_usage_error_is_one_line_exit_2(cli):
    code, _, err = cli("data", "convert", "x", "--from", "bogus", "--out", "y")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "bogus" in err
