"""Config: load -> normalize -> validate, every problem at once with file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gitopsd.yml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return [str(p) for p in info.value.problems]


def test_a_minimal_config_gets_the_default_environments_in_promotion_order(tmp_path, repo):
    config = load(write(tmp_path, f"repositories:\n  - name: shop\n    path: {repo}\n"))
    [shop] = config.repositories
    assert [(e.name, e.branch, e.promote_from) for e in shop.environments] == [
        ("qa", "qa", "main"),
        ("staging", "staging", "qa"),
        ("production", "production", "staging"),
    ]
    assert shop.environments[0].inventory == "environments/qa/hosts.yml"
    assert shop.environments[0].playbook == "playbooks/deploy.yml"
    assert config.state_dir == Path("/var/lib/gitopsd") and config.runtime_dir == Path("/run/gitopsd")
    assert config.sweep_interval == 60


def test_relative_paths_in_the_config_are_relative_to_the_config_file(tmp_path, repo):
    config = load(write(tmp_path, "state_dir: state\nrepositories:\n  - name: shop\n    path: shop.git\n"))
    assert config.state_dir == tmp_path / "state"
    assert config.repositories[0].path == repo


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
sweep_interval: soon
colour: blue
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        inventory: ../../etc/hosts
      - name: "staging; rm -rf /"
        playbook: /etc/passwd
      - name: prod
        branch: qa
        timeout: -5
  - name: Bad Name
    path: {tmp_path}/missing.git
""",
    )
    found = problems(path)
    text = "\n".join(found)
    assert f"{path}:1: sweep_interval: must be a number, not 'soon'" in text
    assert f"{path}:2: colour: unknown key" in text
    assert f"{path}:8: repositories[0].environments[0].inventory: path escapes the repository tree" in text
    assert f"{path}:9: repositories[0].environments[1].name: must be a plain name" in text
    assert f"{path}:10: repositories[0].environments[1].playbook: path escapes the repository tree" in text
    assert f"{path}:12: repositories[0].environments[2].branch: branch 'qa' is already used by environment 'qa'" in text
    assert f"{path}:13: repositories[0].environments[2].timeout: must be at least 1" in text
    assert f"{path}:14: repositories[1].name: must be a plain name" in text
    assert f"{path}:15: repositories[1].path: no Git repository at" in text
    assert len(found) == 9


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "repositories:\n  - name: shop\n    path: [unclosed\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_yaml_tags_that_would_build_python_objects_are_refused(tmp_path):
    path = write(tmp_path, "repositories: !!python/object/apply:os.system ['touch /tmp/gitopsd-pwned']\n")
    [problem] = problems(path)
    assert "invalid YAML" in problem
    assert not Path("/tmp/gitopsd-pwned").exists()


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    [problem] = problems(tmp_path / "nope.yml")
    assert "cannot read config" in problem


def test_check_config_command_exits_non_zero_and_lists_problems(tmp_path):
    path = write(tmp_path, "repositories:\n  - name: shop\n    path: /nonexistent\n    surprise: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gitopsd", "check-config", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "2 problems" in proc.stderr and "surprise: unknown key" in proc.stderr and "path: no Git repository" in proc.stderr


def test_numbers_that_are_not_finite_are_refused_wherever_they_appear(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
sweep_interval: .nan
stop_grace: .inf
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        retry_backoff: .nan
        retry_backoff_max: .inf
        rollout: {{max_fail_percentage: .nan, bake: .inf}}
        verify:
          http: {{url: "http://h/health", timeout: .nan}}
          prometheus: {{url: "http://p", query: up, max: .nan, min: -.inf}}
""",
    )
    found = problems(path)
    env = "repositories[0].environments[0]"
    assert found == [
        f"{path}:8: {env}.retry_backoff: must be a finite number, not nan",
        f"{path}:9: {env}.retry_backoff_max: must be a finite number, not inf",
        f"{path}:10: {env}.rollout.max_fail_percentage: must be a finite number, not nan",
        f"{path}:10: {env}.rollout.bake: must be a finite number, not inf",
        f"{path}:12: {env}.verify.http.timeout: must be a finite number, not nan",
        f"{path}:13: {env}.verify.prometheus.max: must be a finite number, not nan",
        f"{path}:13: {env}.verify.prometheus.min: must be a finite number, not -inf",
        f"{path}:1: sweep_interval: must be a finite number, not nan",
        f"{path}:2: stop_grace: must be a finite number, not inf",
    ]


def test_numbers_beyond_what_the_daemon_can_use_are_refused(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
sweep_interval: 1000000000
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        timeout: 100000000000
        retries: 5000
        retry_backoff_max: 1.0e+300
        rollout: {{max_fail_percentage: 101}}
        verify:
          http: {{url: "http://h/health", expect_status: 600}}
""",
    )
    text = "\n".join(problems(path))
    env = "repositories[0].environments[0]"
    assert f"{path}:1: sweep_interval: must be at most 86400 (one day), not 1000000000" in text
    assert f"{path}:7: {env}.timeout: must be at most 86400 (one day), not 100000000000" in text
    assert f"{path}:8: {env}.retries: must be at most 100, not 5000" in text
    assert f"{path}:9: {env}.retry_backoff_max: must be at most 86400 (one day), not 1e+300" in text
    assert f"{path}:10: {env}.rollout.max_fail_percentage: must be at most 100 (a percentage), not 101" in text
    assert f"{path}:12: {env}.verify.http.expect_status: must be at most 599 (an HTTP status), not 600" in text


def test_a_runtime_dir_too_long_for_the_nudge_socket_is_refused_counting_bytes(tmp_path, repo):
    import socket

    base = f"{tmp_path}/"
    fill = 107 - len(base.encode()) - len("/nudge.sock")
    fits, too_long = base + "r" * fill, base + "r" * (fill - 1) + "é"  # same length in characters
    Path(fits).mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:  # 107 bytes is what Linux really takes
        probe.bind(f"{fits}/nudge.sock")
    load(write(tmp_path, f"runtime_dir: {fits}\nrepositories:\n  - name: shop\n    path: {repo}\n"))
    path = write(tmp_path, f"runtime_dir: {too_long}\nrepositories:\n  - name: shop\n    path: {repo}\n")
    [problem] = problems(path)
    assert problem == (
        f"{path}:1: runtime_dir: the nudge socket {too_long}/nudge.sock would be 108 bytes long; "
        "Unix socket paths hold at most 107: choose a shorter runtime_dir"
    )


def test_a_key_given_twice_in_one_mapping_is_refused_at_the_second_line(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        auto_rollback: false
      - name: production
        auto_rollback: true
        timeout: 60
        auto_rollback: false
sweep_interval: 30
sweep_interval: 60
""",
    )
    assert problems(path) == [
        f"{path}:10: repositories[0].environments[1].auto_rollback: duplicate key (first at line 8)",
        f"{path}:12: sweep_interval: duplicate key (first at line 11)",
    ]


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path, repo):
    config = load(
        write(
            tmp_path,
            f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - &qa {{name: qa, timeout: 60}}
      - {{<<: *qa, name: production, promote_from: qa}}
""",
        )
    )
    assert [(e.name, e.timeout) for e in config.repositories[0].environments] == [("qa", 60), ("production", 60)]


def test_self_referencing_and_exploding_yaml_aliases_give_problems_not_a_hang_or_traceback(tmp_path, repo):
    import time

    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    path = write(tmp_path, f"identity_env: &ids [*ids]\nl0: &l0 [x]\n{levels}repositories:\n  - name: shop\n    path: {repo}\n")
    started = time.monotonic()
    found = problems(path)
    assert time.monotonic() - started < 5
    assert f"{path}:1: identity_env: must be a list of environment variable names, e.g. [GL_USER, REMOTE_USER]" in found
    assert any(p.startswith(f"{path}:10: l8: unknown key; allowed keys here: ") for p in found)


def test_promote_from_loops_between_environments_are_refused(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        promote_from: production
      - name: staging
      - name: production
  - name: blog
    path: {repo}
    environments:
      - name: qa
        promote_from: production
      - name: production
        promote_from: qa
""",
    )
    found = [p for p in problems(path) if "].promote_from: " in p]  # the repository is there twice, too
    assert found == [
        f"{path}:6: repositories[0].environments[0].promote_from: promotions go round in a loop "
        "(qa <- production <- staging <- qa), so nothing can ever enter it: one of these environments must "
        "promote from a branch outside the loop (usually main)",
        f"{path}:13: repositories[1].environments[0].promote_from: promotions go round in a loop "
        "(qa <- production <- qa), so nothing can ever enter it: one of these environments must "
        "promote from a branch outside the loop (usually main)",
    ]


def branch(repo: Path, name: str) -> None:
    """Give a bare repository the branch NAME (one empty commit), as a push would."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "--git-dir", str(repo)]
    tree = subprocess.run(
        [*git, "hash-object", "-w", "-t", "tree", "/dev/null"], capture_output=True, text=True, check=True
    ).stdout.strip()
    commit = subprocess.run([*git, "commit-tree", tree, "-m", name], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "update-ref", f"refs/heads/{name}", commit], check=True)


def test_promote_from_a_later_environment_or_a_branch_outside_the_chain_is_allowed(tmp_path, repo):
    branch(repo, "develop")
    config = load(
        write(
            tmp_path,
            f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        promote_from: develop
      - name: hotfix
        promote_from: production
      - name: production
        promote_from: qa
""",
        )
    )
    assert [e.promote_from for e in config.repositories[0].environments] == ["develop", "production", "qa"]


def test_a_promote_from_naming_no_environment_branch_main_or_branch_of_the_repository_is_reported(tmp_path, repo):
    branch(repo, "develop")
    subprocess.run(["git", "--git-dir", str(repo), "pack-refs", "--all"], check=True)  # found in packed-refs too
    path = write(
        tmp_path,
        f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        promote_from: develop
      - name: staging
        branch: stage
        promote_from: qa
      - name: production
        promote_from: stagng
      - name: hotfix
        promote_from: staging
""",
    )
    found = [p for p in problems(path) if "].promote_from: " in p]
    assert found == [
        f"{path}:11: repositories[0].environments[2].promote_from: 'stagng' is no environment branch here, not main "
        f"and no branch of {repo}: did you mean 'stage'? promote from one of qa, stage, production, hotfix, main, "
        "or push the branch 'stagng' first",
        f"{path}:13: repositories[0].environments[3].promote_from: 'staging' is no environment branch here, not main "
        f"and no branch of {repo}: 'staging' is the environment whose branch is 'stage'; promote from one of qa, "
        "stage, production, hotfix, main, or push the branch 'staging' first",
    ]


def test_one_repository_configured_under_two_names_is_refused(tmp_path, repo):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link.git").symlink_to(repo)
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "-q", "--bare", str(other)], check=True)
    path = write(
        tmp_path,
        f"""\
repositories:
  - name: shop
    path: {repo}
  - name: shop-again
    path: {tmp_path}/elsewhere/../shop.git
  - name: shop-linked
    path: link.git
  - name: other
    path: {other}
""",
    )
    assert problems(path) == [
        f"{path}:5: repositories[1].path: {repo} is the repository of shop (repositories[0]) again; "
        "configure each repository once, or it is deployed twice at the same time",
        f"{path}:7: repositories[2].path: {repo} is the repository of shop (repositories[0]) again; "
        "configure each repository once, or it is deployed twice at the same time",
    ]


def test_state_dir_and_runtime_dir_must_be_folders(tmp_path, repo):
    (tmp_path / "state").write_text("not a folder")
    (tmp_path / "run").write_text("not a folder either")
    path = write(tmp_path, f"state_dir: state\nruntime_dir: run/gitopsd\nrepositories:\n  - name: shop\n    path: {repo}\n")
    assert problems(path) == [
        f"{path}:1: state_dir: {tmp_path / 'state'} is not a folder",
        f"{path}:2: runtime_dir: {tmp_path / 'run' / 'gitopsd'} cannot be created: {tmp_path / 'run'} is not a folder",
    ]


def test_paths_with_nul_bytes_or_symlink_loops_are_problems_not_tracebacks(tmp_path, repo):
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    path = write(
        tmp_path,
        f"""\
state_dir: "st\\0ate"
runtime_dir: loop1/run
repositories:
  - name: shop
    path: "{repo}\\0"
    environments:
      - name: qa
        inventory: "hosts\\0.yml"
""",
    )
    found = problems(path)
    assert found[0] == f"{path}:5: repositories[0].path: must be the path of a bare Git repository, not '{repo}\\x00'"
    assert (
        found[1]
        == f"{path}:8: repositories[0].environments[0].inventory: must be a path relative to the repository tree, not 'hosts\\x00.yml'"
    )
    assert found[2] == f"{path}:1: state_dir: must be a folder path, not 'st\\x00ate'"
    assert found[3].startswith(f"{path}:2: runtime_dir: cannot resolve 'loop1/run': Symlink loop from ")
    assert len(found) == 4


def test_a_deploy_window_longer_than_a_month_is_refused_not_a_crash_later(tmp_path, repo):
    path = write(
        tmp_path,
        f"""\
repositories:
  - name: shop
    path: {repo}
    environments:
      - name: qa
        windows:
          - {{deny: "0 0 20 12 *", duration: 31d}}
          - {{deny: "0 0 1 1 *", duration: 32d}}
          - {{allow: "0 9 * * *", duration: 99999999999999999999d}}
          - {{allow: "0 9 * * *", duration: 99999999999999999999}}
""",
    )
    at = "repositories[0].environments[0].windows"
    assert problems(path) == [
        f"{path}:8: {at}[1].duration: a window lasts at most 31 days, not 32d (for longer, let cron start it again)",
        f"{path}:9: {at}[2].duration: a window lasts at most 31 days, not 99999999999999999999d "
        "(for longer, let cron start it again)",
        f"{path}:10: {at}[3].duration: a window lasts at most 31 days, not 99999999999999999999 "
        "(for longer, let cron start it again)",
    ]


def test_a_sandbox_folder_behind_a_symlink_loop_is_a_problem_not_a_traceback(tmp_path, repo):
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    path = write(tmp_path, f"sandbox: {{read_only: [loop1/x]}}\nrepositories:\n  - name: shop\n    path: {repo}\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:1: sandbox.read_only[0]: cannot resolve 'loop1/x': Symlink loop from ")


def test_ci_settings_are_parsed_and_each_mistake_is_named(tmp_path):
    """The `api:`, `ci:`, require_checks and auto_promote settings of issue 12."""
    from gitopsd.config import ConfigError, load

    repo = tmp_path / "shop.git"
    (repo / "objects").mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    base = {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")}

    def write(repo_extra, env_extra=None, top=None):
        import yaml

        (tmp_path / "c.yml").write_text(
            yaml.safe_dump(
                {
                    **base,
                    **(top or {}),
                    "repositories": [
                        {
                            "name": "shop",
                            "path": str(repo),
                            **repo_extra,
                            "environments": [{"name": "qa", **(env_extra or {})}, {"name": "staging"}],
                        }
                    ],
                }
            )
        )
        return tmp_path / "c.yml"

    cfg = load(
        write(
            {
                "ci": {
                    "steps": [
                        {"name": "build", "run": "python3 app/build.py", "artifacts": ["dist/*.tar.gz"]},
                        {"name": "test", "run": ["python3", "-m", "unittest"], "timeout": 60},
                    ],
                    "trigger": [{"url": "http://ci.example/hook", "kind": "jenkins", "branches": ["main", "feature/*"]}],
                }
            },
            {"require_checks": ["gitopsd/build", "gitopsd/test"], "auto_promote": True},
            {"api": {"listen": "127.0.0.1:9999", "tokens_file": "tokens.yml"}},
        )
    )
    repo_cfg = cfg.repositories[0]
    assert [s.run for s in repo_cfg.ci.steps] == [("python3", "app/build.py"), ("python3", "-m", "unittest")]
    assert repo_cfg.ci.steps[0].artifacts == ("dist/*.tar.gz",) and repo_cfg.ci.steps[1].timeout == 60
    assert repo_cfg.ci.trigger[0].kind == "jenkins" and repo_cfg.ci.trigger[0].branches == ("main", "feature/*")
    assert repo_cfg.environments[0].require_checks == ("gitopsd/build", "gitopsd/test")
    assert repo_cfg.environments[0].auto_promote and not repo_cfg.environments[1].auto_promote
    assert cfg.api is not None and (cfg.api.host, cfg.api.port) == ("127.0.0.1", 9999)
    assert cfg.api.tokens_file == tmp_path / "tokens.yml"

    with pytest.raises(ConfigError) as err:
        load(
            write(
                {
                    "ci": {
                        "steps": [{"name": "Build!", "run": ""}, {"name": "t", "run": "x", "artifacts": ["../up"]}],
                        "trigger": [{"url": "ftp://x", "kind": "travis"}, {"url": "http://gl", "kind": "gitlab"}],
                    }
                },
                {"require_checks": ["gitopsd/lint", "x" * 300], "auto_promote": "yes"},
                {"api": {"listen": "localhost"}},
            )
        )
    text = str(err.value)
    for expected in (
        "repositories[0].ci.steps[0].name: must be a plain name",
        "repositories[0].ci.steps[0].run: must be a command",
        "repositories[0].ci.steps[1].artifacts: path escapes the repository tree",
        "repositories[0].ci.trigger[0].url: must be an http:// or https:// URL",
        "repositories[0].ci.trigger[0].kind: must be one of generic, jenkins, gitlab, circleci, buildbot",
        "repositories[0].ci.trigger[1].secret_file: a gitlab trigger needs the file holding its token",
        "repositories[0].environments[0].require_checks: must be a list of commit status contexts",
        "repositories[0].environments[0].auto_promote: must be true or false",
        "api.listen: must be HOST:PORT",
    ):
        assert expected in text, (expected, text)

    with pytest.raises(ConfigError) as err:  # a gitopsd/<step> context no step reports; auto-promotion from main untested
        load(write({"ci": {"steps": [{"name": "test", "run": "make check"}]}}, {"require_checks": ["gitopsd/tset"]}))
    assert "'gitopsd/tset' would never be reported" in str(err.value) and "gitopsd/test" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load(write({}, {"auto_promote": True}))
    assert "environments[0].auto_promote: would promote every new head of main untested" in str(err.value)
