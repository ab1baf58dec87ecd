"""What the daemon serves: the HTTP API and dashboard thread, the control socket and the requests they carry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .. import config as config_mod
from ..adapters.control import ControlServer
from ..adapters.notifications import notify
from ..ci import rerun
from ..ci.heads import matches
from ..ci.triggers import safe_url
from ..core.errors import CONFLICT, MISSING, UNAVAILABLE, Refused, refusal_answer
from ..services import named
from ..services.changecontrol import OPS as CHANGE_CONTROL_OPS
from .events import Intake

log = logging.getLogger("gitopsd.daemon")


class Serving(Intake):
    """The API's server, the control socket, and a request of either as its sender's identity."""

    def _start_api(self) -> None:
        """Serve the HTTP API in its own thread; stored statuses make the daemon look at their repository (status_reported)."""
        if self.config.api is not None:
            from ..api.server import serve

            dashboard: Callable[..., Any] | None = None
            if getattr(self.config, "web", None) is not None:  # only then Jinja2 and the pages are imported
                from functools import partial

                from ..web.app import create_web_app

                dashboard = partial(create_web_app, in_state=self.status_rows.in_state)  # `status`'s rows filter it
            self.api = serve(
                lambda: self.config,
                self.store,
                on_status=self.status_reported,
                human_gates=self.control_request,  # as the token's owner or the signed-in user
                metrics=self.metrics.scrape if self.metrics is not None else None,
                dashboard=dashboard,
            )

    def _start_control(self) -> None:
        """Take sign-offs, release candidates and approvals on the control socket (identity: SO_PEERCRED)."""
        try:
            self.control = ControlServer(self.config.control_socket, self.control_request)
        except OSError as exc:
            log.error(
                "cannot open the control socket %s: %s; sign-offs and approvals cannot be recorded until a restart",
                self.config.control_socket,
                exc,
            )
            return
        self.control.start()

    def _notify_people(self, target: config_mod.Notify, event: dict[str, Any]) -> None:
        """The human gates' events: to the environment's `notify`, and approval requests to the chat room too."""
        notify(target, event)
        self.chat.announce(event)

    def control_request(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """A request of the control socket or the dashboard, as `identity`: a CI rerun here, the rest to HumanGates."""
        if request.get("op") in CHANGE_CONTROL_OPS:  # locks, alert freezes, break-glass (changecontrol.py)
            return self.change_control.handle(identity, request)
        if request.get("op") == "status":  # `status --json`: the rows the daemon keeps (services/statusrows.py)
            if self.store_lost is not None:  # the caller reads the store instead, and says it was replaced
                return refusal_answer(Refused(self.store_lost, UNAVAILABLE, "store_replaced"))
            return self.status_rows.answer(request)
        if request.get("op") == "preview":
            return self.previewer.request(identity, request)
        if request.get("op") == "cancel":
            return self._cancel(identity, request)
        if request.get("op") == "retry":
            return self._retry(identity, request)
        if request.get("op") != "ci-rerun":
            return self.human_gates.handle(identity, request)  # one lock with the HTTP API
        repo = self.config.repository(str(request.get("repo")))
        if repo is None:
            return refusal_answer(
                Refused(
                    f"no repository named {str(request.get('repo'))[:100]!r} "
                    f"(known: {', '.join(r.name for r in self.config.repositories)})",
                    MISSING,
                    "repo_not_found",
                )
            )
        try:
            event = rerun.head_event(repo, str(request.get("head") or ""), identity, self._pusher_of)
        except rerun.RerunRefused as exc:
            return refusal_answer(exc)
        log.info(
            "CI asked to run again on %s %s by %s",
            event.branch,
            event.after[:7],
            identity,
            extra={"repo": repo.name, "commit": event.after[:7]},
        )
        for sink in self.ci_sinks:
            sink(repo, event)
        what = (["the built-in steps"] if repo.ci.steps and matches(event.branch, repo.ci.branches) else []) + [
            f"the trigger to {safe_url(t.url)}" for t in repo.ci.trigger if matches(event.branch, t.branches)
        ]
        return {
            "ok": True,
            "identity": identity,
            "message": f"{repo.name}: CI runs again on {event.branch} at {event.after[:7]} ({', '.join(what)}), "
            f"asked by {identity}; follow with `gitopsd ci status {event.after[:7]}`",
        }

    def _retry(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """`gitopsd retry ENV --force`, as `identity`: a person in override_by need not own the state database. Only the
        forced retry is asked here (override_by decides who): a plain one clears stalls and bad trees, which the
        daemon's group (the git user among it) may not, so it stays with whoever may write the store."""
        from contextlib import nullcontext

        from ..gate.nudge import Nudge
        from ..services import operations

        def announce(trigger: str, commits: tuple[str, ...], reason: str | None) -> bool:
            self.heard(Nudge(repo=str(repo.path), trigger=trigger, actor=identity, commits=commits, reason=reason))
            return True

        try:
            repo = named.repository(self.config, request.get("repo"))
            done = operations.retry(
                self.config,
                lambda: nullcontext(self.store),
                repo,
                str(request.get("env") or ""),
                identity,
                force=True,
                reason=str(request["reason"]) if request.get("reason") else None,
                announce=announce,
            )
        except Refused as exc:
            return refusal_answer(exc)
        return {"ok": done.ok, "identity": identity, "message": "\n".join(done.lines)}

    def _cancel(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """`gitopsd cancel ENV`: stop the deployment running there (a hung playbook), as `identity`."""
        try:
            repo = named.repository(self.config, request.get("repo"))
            env = named.environment(repo, request.get("env"))
        except Refused as exc:
            return refusal_answer(exc)
        item = self.reconciler.cancel(repo.name, env.name, identity)
        if item is None:
            return refusal_answer(
                Refused(
                    f"nothing is deploying in {repo.name}/{env.name} now, so there is nothing to cancel (see `gitopsd status`)",
                    CONFLICT,
                    "not_deploying",
                )
            )
        deployed = self.store.deployed(repo.name, env.name)
        log.warning(
            "deployment #%d of %s canceled by %s",
            item.deployment_id,
            item.commit[:7],
            identity,
            extra={"repo": repo.name, "env": env.name, "commit": item.commit[:7]},
        )
        return {
            "ok": True,
            "identity": identity,
            "message": f"{repo.name}/{env.name}: deployment #{item.deployment_id} of {item.commit[:7]} canceled by "
            f"{identity}: its run and every process it started stop now; {env.name} stays on "
            f"{deployed.commit[:7] if deployed else 'nothing'} until the branch moves or `gitopsd retry {env.name}`",
        }
