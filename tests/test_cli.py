"""The management side of the CLI, run in-process against the test database."""
import pytest

from nextframe import cli
from nextframe.tenancy import actions
from nextframe.tenancy.models import ApiKey, Organization

pytestmark = pytest.mark.django_db


def test_createorg_with_quotas(capsys):
    assert cli.main(["createorg", "studio", "--max-live-sessions", "2", "--gpu-seconds-limit", "3600"]) == 0
    org = Organization.objects.get(name="studio")
    assert org.max_live_sessions == 2 and org.gpu_seconds_limit == 3600
    assert cli.main(["createorg", "studio"]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["x", "--gpu-seconds-limit", "lots"], "not a number"),
    (["x", "--gpu-seconds-limit", "inf"], ">= 0"),
    (["x", "--max-live-sessions", "-1"], ">= 0"),
    (["Bad name!"], "must be a slug"),
])
def test_createorg_rejects_bad_input_with_a_message(capsys, args, message):
    assert cli.main(["createorg", *args]) == 1
    assert message in capsys.readouterr().err
    assert not Organization.objects.exists()


def test_createkey_prints_the_key_alone_on_its_last_line(capsys, org):
    assert cli.main(["createkey", "--org", "acme", "--scopes", "live,read", "--test"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    principal = actions.authenticate_key(key)
    assert key.startswith("nf_test_") and principal.organization == org
    assert principal.scopes == ("live", "read")


def test_createkey_errors(capsys, org):
    assert cli.main(["createkey", "--org", "nobody"]) == 1
    assert "no organisation named 'nobody'" in capsys.readouterr().err
    assert cli.main(["createkey", "--org", "acme", "--scopes", "admin"]) == 1
    assert "scopes must be" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["full", "prefix", "id"])
def test_revokekey_by_key_prefix_or_id(capsys, org, form):
    row, key = actions.create_key(org)
    arg = {"full": key, "prefix": row.prefix, "id": row.key_id}[form]
    assert cli.main(["revokekey", arg]) == 0
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    with pytest.raises(actions.AuthError):
        actions.authenticate_key(key)


def test_revokekey_unknown(capsys):
    assert cli.main(["revokekey", "nf_live_zzzzzzzzzzzz_"]) == 1
    assert "no API key" in capsys.readouterr().err


def test_manage_passes_through_to_django(capsys):
    assert cli.main(["manage", "check"]) == 0
    assert "no issues" in capsys.readouterr().out


def test_first_run_bootstrap_creates_default_org_once():
    key = cli.bootstrap_default_org()
    assert actions.authenticate_key(key).organization.name == "default"
    assert cli.bootstrap_default_org() is None


def test_a_dead_child_is_reported_with_the_tail_of_its_log(tmp_path, capsys):
    (tmp_path / "worker.log").write_text("".join(f"line {i}\n" for i in range(100)) + "KeyError: 'boom'\n")
    cli._report_exit("worker", 1, tmp_path)
    err = capsys.readouterr().err
    assert "the worker process exited with code 1" in err and "KeyError: 'boom'" in err
    assert "line 81\n" in err and "line 80\n" not in err  # the last 20 lines, not the whole log
    cli._report_exit("web", 1, None)  # --verbose: the log was on the terminal already
    assert "last lines" not in capsys.readouterr().err


def test_a_port_in_use_is_named_before_anything_starts():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert "in use" in cli.port_in_use("127.0.0.1", port)
    assert cli.port_in_use("127.0.0.1", port) is None
    assert "cannot resolve" in cli.port_in_use("no-such-host.invalid", port)
